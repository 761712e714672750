//! Each pass of the deterministic image gradient against its exact host model
//! (`vsr_kernels::fixed_point`): pass 1's `emax` from the inputs, pass 2's `acc` from the inputs and
//! the device's `emax`, pass 3's `grad_img` from the device's `emax` and `acc`. Every comparison is
//! bitwise, and each pass is fed what the device produced before it, so the first pass that
//! mismatches is the faulty one. The report prints the first mismatching elements of each pass.

use burn::tensor::{Int, Shape, Tensor, TensorData, TensorPrimitive};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, tensor::CubeTensor};
use vsr_kernels::{cube::warp_backward_stages, fixed_point};

type Cube<R, BT> = CubeBackend<R, f32, i32, BT>;

/// Deterministic pseudo-random values in `[lo, hi)`, the same on every machine.
pub fn lcg_values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn upload<R: CubeRuntime, BT: BoolElement>(
    data: &[f32],
    shape: [usize; 4],
    device: &R::Device,
) -> CubeTensor<R> {
    Tensor::<Cube<R, BT>, 4>::from_data(TensorData::new(data.to_vec(), shape), device)
        .into_primitive()
        .tensor()
}

fn read_u32<R: CubeRuntime, BT: BoolElement>(t: CubeTensor<R>) -> Vec<u32> {
    let data = Tensor::<Cube<R, BT>, 1, Int>::from_primitive(t).into_data();
    data.to_vec::<u32>()
        .unwrap_or_else(|e| panic!("reading a u32 buffer: {e:?}"))
}

fn read_f32<R: CubeRuntime, BT: BoolElement>(t: CubeTensor<R>) -> Vec<f32> {
    Tensor::<Cube<R, BT>, 4>::from_primitive(TensorPrimitive::Float(t))
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()
}

/// `[b, c, y, x]` of linear element `i` of a (B,C,H,W) buffer.
fn coords(i: usize, [_, c, h, w]: [usize; 4]) -> [usize; 4] {
    [i / (c * h * w), i / (h * w) % c, i / w % h, i % w]
}

/// Compares `got` with `want` bitwise; prints the count and the first few mismatches.
fn compare(
    pass: &str,
    got: &[u32],
    want: &[u32],
    describe: impl Fn(usize, u32, u32) -> String,
) -> usize {
    assert_eq!(got.len(), want.len(), "{pass}: lengths");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    eprintln!("  {pass}: {} of {} differ", bad.len(), got.len());
    for &i in bad.iter().take(6) {
        eprintln!("    {}", describe(i, got[i], want[i]));
    }
    bad.len()
}

/// One case: the device's three passes against the model; returns the number of mismatches.
fn check_case<R: CubeRuntime, BT: BoolElement>(
    device: &R::Device,
    shape: [usize; 4],
    flow: &[f32],
    grad_out: &[f32],
) -> usize {
    let [b, c, h, w] = shape;
    let img = lcg_values(b * c * h * w, 99, -1.0, 1.0);
    let run = || {
        warp_backward_stages::<R>(
            upload::<R, BT>(&img, shape, device),
            upload::<R, BT>(flow, [b, 2, h, w], device),
            upload::<R, BT>(grad_out, shape, device),
        )
    };
    let s = run();
    let t = s.t_bits;
    let emax = read_u32::<R, BT>(s.emax);
    let acc = read_u32::<R, BT>(s.acc);
    let grad_img: Vec<u32> = read_f32::<R, BT>(s.grad_img)
        .iter()
        .map(|v| v.to_bits())
        .collect();
    eprintln!("case {shape:?}, T = {t}");

    let emax_model = fixed_point::pass1_emax(shape, flow, grad_out);
    let mut bad = compare("pass 1 (emax)", &emax, &emax_model, |i, g, m| {
        format!(
            "{:?}: device {g:#010x} ({:e}), model {m:#010x} ({:e}), {} ulp",
            coords(i, shape),
            f32::from_bits(g),
            f32::from_bits(m),
            (g as i64 - m as i64).abs()
        )
    });

    let acc_model = fixed_point::pass2_acc(shape, flow, grad_out, &emax, t);
    let word = |v: &[u32], i: usize| (v[2 * i + 1] as u64) << 32 | v[2 * i] as u64;
    let acc64: Vec<u64> = (0..emax.len()).map(|i| word(&acc, i)).collect();
    let acc64_model: Vec<u64> = (0..emax.len()).map(|i| word(&acc_model, i)).collect();
    let lo = |v: &[u64]| v.iter().map(|&x| x as u32).collect::<Vec<_>>();
    let hi = |v: &[u64]| v.iter().map(|&x| (x >> 32) as u32).collect::<Vec<_>>();
    let show = |i: usize| {
        format!(
            "{:?}: device {:#018x}, model {:#018x} (emax {:#010x})",
            coords(i, shape),
            acc64[i],
            acc64_model[i],
            emax[i]
        )
    };
    bad += compare(
        "pass 2 (acc low words)",
        &lo(&acc64),
        &lo(&acc64_model),
        |i, _, _| show(i),
    );
    bad += compare(
        "pass 2 (acc high words)",
        &hi(&acc64),
        &hi(&acc64_model),
        |i, _, _| show(i),
    );

    let gi_model: Vec<u32> = fixed_point::pass3_grad_img(&emax, &acc, t)
        .iter()
        .map(|v| v.to_bits())
        .collect();
    bad += compare("pass 3 (grad_img)", &grad_img, &gi_model, |i, g, m| {
        format!(
            "{:?}: device {:e}, model {:e} (emax {:#010x}, acc {:#018x})",
            coords(i, shape),
            f32::from_bits(g),
            f32::from_bits(m),
            emax[i],
            acc64[i]
        )
    });

    // The whole chain from the inputs alone, and a second run: same bits.
    let full_model: Vec<u32> = fixed_point::grad_img(shape, flow, grad_out)
        .iter()
        .map(|v| v.to_bits())
        .collect();
    bad += compare(
        "passes 1-3 vs model from inputs",
        &grad_img,
        &full_model,
        |i, g, m| {
            format!(
                "{:?}: device {:e}, model {:e}",
                coords(i, shape),
                f32::from_bits(g),
                f32::from_bits(m)
            )
        },
    );
    let again: Vec<u32> = read_f32::<R, BT>(run().grad_img)
        .iter()
        .map(|v| v.to_bits())
        .collect();
    bad += compare("second run", &again, &grad_img, |i, g, m| {
        format!(
            "{:?}: {:e} then {:e}",
            coords(i, shape),
            f32::from_bits(m),
            f32::from_bits(g)
        )
    });
    bad
}

/// Every pass of the deterministic backward equals its host model, bit for bit, on widths that
/// CUDA pads (40, 11, 48), flows from small to far outside, and gradients spanning 2^-20..2^20.
pub fn check_passes_against_model<R: CubeRuntime, BT: BoolElement>(device: &R::Device) {
    // Evidence for the layout of Burn's zero buffers on this runtime (CUDA pads the rows): the
    // strides, and how many of the first numel u32 of the raw buffer (what a kernel indexing it
    // linearly reads) are not zero after the pool held other data.
    let shape = [2, 3, 24, 40];
    let numel: usize = shape.iter().product();
    drop(Tensor::<Cube<R, BT>, 1>::ones([4 * numel], device).into_data());
    let z = burn_cubecl::ops::numeric::zeros_client(
        R::client(device),
        device.clone(),
        Shape::new(shape),
        burn::tensor::DType::U32,
    );
    let raw = z
        .client
        .read_one(z.handle.clone())
        .expect("reading the zeros buffer");
    let nonzero = raw
        .chunks_exact(4)
        .take(numel)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count();
    eprintln!(
        "zeros_client({shape:?}, U32): strides {:?}, contiguous {}, {} bytes for {} elements, \
         {nonzero} of the first {numel} u32 of the raw buffer are not 0",
        z.meta.strides(),
        z.is_contiguous(),
        raw.len(),
        numel,
    );

    let mut bad = 0;
    let shape = [2, 3, 24, 40];
    let n = shape.iter().product::<usize>();
    let flow = lcg_values(2 * 2 * 24 * 40, 1, -6.0, 6.0);
    let g = lcg_values(n, 2, -1.0, 1.0);
    bad += check_case::<R, BT>(device, shape, &flow, &g);

    let shape = [1, 2, 7, 11];
    let flow = lcg_values(2 * 7 * 11, 3, -40.0, 40.0);
    let g = lcg_values(2 * 7 * 11, 4, -1.0, 1.0);
    bad += check_case::<R, BT>(device, shape, &flow, &g);

    let shape = [1, 1, 32, 48];
    let flow = lcg_values(2 * 32 * 48, 5, -60.0, 60.0);
    let g: Vec<f32> = lcg_values(32 * 48, 6, -1.0, 1.0)
        .iter()
        .zip(lcg_values(32 * 48, 7, -20.0, 20.0))
        .map(|(v, e)| v * e.exp2())
        .collect();
    bad += check_case::<R, BT>(device, shape, &flow, &g);

    assert_eq!(
        bad, 0,
        "the device's passes differ from the model (see above)"
    );
}
