//! Checks shared by the backend-specific test files; each is generic over the backend.
#![allow(dead_code)]

use burn::backend::Autodiff;
use burn::tensor::{DType, Distribution, Tensor, TensorData, backend::Backend};
use std::collections::HashMap;
use vsr_kernels::{WarpBackend, warp, warp_backward, warp_reference};

#[cfg(feature = "cubecl")]
pub mod stages;

pub type Golden = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The `warp.*` tensors of `tests/fixtures/golden.safetensors` (PyTorch outputs).
pub fn golden() -> Golden {
    // VSR_REPO_DIR: the repository root when test binaries run on another machine.
    let root = std::env::var_os("VSR_REPO_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let path = root.join("tests/fixtures/golden.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden.safetensors");
    st.tensors()
        .into_iter()
        .filter(|(name, _)| name.starts_with("warp."))
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), data))
        })
        .collect()
}

pub fn tensor<B: Backend>(g: &Golden, key: &str, device: &B::Device) -> Tensor<B, 4> {
    let (shape, data) = &g[key];
    Tensor::from_data(TensorData::new(data.clone(), shape.clone()), device)
}

pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

pub fn bits<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<u32> {
    values(t).into_iter().map(f32::to_bits).collect()
}

/// |a - e| <= atol + rtol * |e| everywhere, and both finite.
pub fn assert_close(name: &str, actual: &[f32], expected: &[f32], rtol: f32, atol: f32) {
    assert_eq!(actual.len(), expected.len(), "{name}: lengths");
    let mut worst = (0usize, 0.0f32);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(a.is_finite(), "{name}[{i}] = {a}");
        let excess = (a - e).abs() - (atol + rtol * e.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    let (i, excess) = worst;
    assert!(
        excess <= 0.0,
        "{name}: element {i}: got {}, expected {} (rtol {rtol}, atol {atol})",
        actual[i],
        expected[i]
    );
}

pub fn random<B: Backend>(shape: [usize; 4], lo: f64, hi: f64, device: &B::Device) -> Tensor<B, 4> {
    Tensor::random(shape, Distribution::Uniform(lo, hi), device)
}

/// Gradients of sum(f(img, flow) * up) through `Autodiff<B>`.
pub fn autodiff_grads<B: WarpBackend>(
    img: Tensor<B, 4>,
    flow: Tensor<B, 4>,
    up: Tensor<B, 4>,
    kernel: bool,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let img = Tensor::<Autodiff<B>, 4>::from_inner(img).require_grad();
    let flow = Tensor::<Autodiff<B>, 4>::from_inner(flow).require_grad();
    let out = if kernel {
        warp(img.clone(), flow.clone())
    } else {
        warp_reference(img.clone(), flow.clone())
    };
    let grads = (out.clone() * Tensor::from_inner(up)).sum().backward();
    (
        out.inner(),
        img.grad(&grads).expect("grad img"),
        flow.grad(&grads).expect("grad flow"),
    )
}

/// Forward and both gradients against PyTorch's, through `warp`, `warp_backward` and `Autodiff<B>`.
pub fn check_golden<B: WarpBackend>(device: &B::Device) {
    let g = golden();
    let img = tensor::<B>(&g, "warp.img", device);
    let flow = tensor::<B>(&g, "warp.flow", device);
    let up = tensor::<B>(&g, "warp.upstream", device);
    let (rtol, atol) = (1e-4, 1e-5);
    let expect = |k: &str| g[k].1.clone();

    let out = warp(img.clone(), flow.clone());
    assert_close("out", &values(out), &expect("warp.out"), rtol, atol);
    let (gi, gf) = warp_backward(img.clone(), flow.clone(), up.clone());
    assert_close(
        "grad_img",
        &values(gi),
        &expect("warp.grad_img"),
        rtol,
        atol,
    );
    // The flow gradient multiplies image differences by the upstream: a slightly larger atol.
    assert_close(
        "grad_flow",
        &values(gf),
        &expect("warp.grad_flow"),
        rtol,
        1e-4,
    );

    for kernel in [true, false] {
        let (out, gi, gf) = autodiff_grads(img.clone(), flow.clone(), up.clone(), kernel);
        let tag = if kernel {
            "autodiff(warp)"
        } else {
            "autodiff(warp_reference)"
        };
        assert_close(
            &format!("{tag} out"),
            &values(out),
            &expect("warp.out"),
            rtol,
            atol,
        );
        assert_close(
            &format!("{tag} grad_img"),
            &values(gi),
            &expect("warp.grad_img"),
            rtol,
            atol,
        );
        assert_close(
            &format!("{tag} grad_flow"),
            &values(gf),
            &expect("warp.grad_flow"),
            rtol,
            1e-4,
        );
    }
}

/// `warp`/`warp_backward` of `B` against autodiff of `warp_reference` on random inputs.
pub fn check_against_reference<B: WarpBackend>(
    device: &B::Device,
    shape: [usize; 4],
    flow_range: f64,
) {
    let [b, _, h, w] = shape;
    let img = random::<B>(shape, -1.0, 1.0, device);
    let flow = random::<B>([b, 2, h, w], -flow_range, flow_range, device);
    let up = random::<B>(shape, -1.0, 1.0, device);
    let tag = format!("{shape:?} flow ±{flow_range}");
    let (ref_out, ref_gi, ref_gf) = autodiff_grads(img.clone(), flow.clone(), up.clone(), false);
    let out = warp(img.clone(), flow.clone());
    assert_close(
        &format!("{tag} out"),
        &values(out),
        &values(ref_out),
        1e-5,
        1e-5,
    );
    let (gi, gf) = warp_backward(img.clone(), flow.clone(), up.clone());
    let ref_gi = values(ref_gi);
    let ref_gf = values(ref_gf);
    assert_close(&format!("{tag} grad_img"), &values(gi), &ref_gi, 1e-4, 1e-5);
    assert_close(
        &format!("{tag} grad_flow"),
        &values(gf),
        &ref_gf,
        1e-4,
        1e-4,
    );
    let (_, gi, gf) = autodiff_grads(img, flow, up, true);
    assert_close(
        &format!("{tag} autodiff grad_img"),
        &values(gi),
        &ref_gi,
        1e-4,
        1e-5,
    );
    assert_close(
        &format!("{tag} autodiff grad_flow"),
        &values(gf),
        &ref_gf,
        1e-4,
        1e-4,
    );
}

/// Zero flow: the output is the image and the image gradient the upstream, bit for bit.
pub fn check_identity<B: WarpBackend>(device: &B::Device) {
    let shape = [2, 3, 7, 11];
    let img = random::<B>(shape, -1.0, 1.0, device);
    let up = random::<B>(shape, -1.0, 1.0, device);
    let flow = Tensor::<B, 4>::zeros([2, 2, 7, 11], device);
    assert_eq!(
        bits(warp(img.clone(), flow.clone())),
        bits(img.clone()),
        "identity forward"
    );
    let (gi, gf) = warp_backward(img.clone(), flow.clone(), up.clone());
    assert_eq!(bits(gi), bits(up.clone()), "identity grad_img");
    let (_, _, ref_gf) = autodiff_grads(img, flow, up, false);
    assert_close(
        "identity grad_flow",
        &values(gf),
        &values(ref_gf),
        1e-5,
        1e-5,
    );
}

/// Flow far outside the image: every sample clamps to the border; the flow gradient is 0.
pub fn check_far_outside<B: WarpBackend>(device: &B::Device) {
    let shape = [1, 2, 5, 6];
    let img = random::<B>(shape, -1.0, 1.0, device);
    let up = random::<B>(shape, -1.0, 1.0, device);
    for (u, v) in [(1e4f32, 1e4f32), (-1e4, -1e4), (-1e3, 2.5), (0.5, 1e5)] {
        let fu = Tensor::<B, 4>::full([1, 1, 5, 6], u, device);
        let fv = Tensor::<B, 4>::full([1, 1, 5, 6], v, device);
        let flow = Tensor::cat(vec![fu, fv], 1);
        let (ref_out, ref_gi, ref_gf) =
            autodiff_grads(img.clone(), flow.clone(), up.clone(), false);
        let tag = format!("far ({u}, {v})");
        assert_close(
            &format!("{tag} out"),
            &values(warp(img.clone(), flow.clone())),
            &values(ref_out),
            1e-5,
            1e-6,
        );
        let (gi, gf) = warp_backward(img.clone(), flow.clone(), up.clone());
        assert_close(
            &format!("{tag} grad_img"),
            &values(gi),
            &values(ref_gi),
            1e-5,
            1e-6,
        );
        let gf = values(gf);
        assert_close(
            &format!("{tag} grad_flow"),
            &gf,
            &values(ref_gf),
            1e-5,
            1e-6,
        );
        if u.abs() > 100.0 {
            assert!(
                gf[..30].iter().all(|&x| x == 0.0),
                "{tag}: d/du must be 0 when clamped"
            );
        }
        if v.abs() > 100.0 {
            assert!(
                gf[30..].iter().all(|&x| x == 0.0),
                "{tag}: d/dv must be 0 when clamped"
            );
        }
    }
    // Corner sample value.
    let flow = Tensor::<B, 4>::full([1, 2, 5, 6], 1e4, device);
    let out = values(warp(img.clone(), flow));
    let v = values(img);
    assert!(out[..30].iter().all(|&o| o == v[29]) && out[30..].iter().all(|&o| o == v[59]));
}

/// Finite differences: the output of a pixel depends only on that pixel's flow, and is linear in
/// the fractional offsets within a cell, so a central difference that stays inside the cell is
/// exact up to rounding. Flow fractional parts in [0.2, 0.8], eps 0.05: no cell border crossed.
/// The image gradient is checked as a directional derivative (the loss is linear in the image).
pub fn check_finite_differences<B: WarpBackend>(device: &B::Device) {
    let shape = [2, 3, 9, 13];
    let [b, c, h, w] = shape;
    let img = random::<B>(shape, -1.0, 1.0, device);
    let up = random::<B>(shape, -1.0, 1.0, device);
    let base = random::<B>([b, 2, h, w], -4.0, 4.0, device).floor();
    let frac = random::<B>([b, 2, h, w], 0.2, 0.8, device);
    let flow = base + frac;
    let (gi, gf) = warp_backward(img.clone(), flow.clone(), up.clone());
    let gf = values(gf);
    let eps = 0.05f32;
    for axis in 0..2 {
        let mut delta = vec![0.0f32; b * 2 * h * w];
        for bi in 0..b {
            for p in 0..h * w {
                delta[(bi * 2 + axis) * h * w + p] = eps;
            }
        }
        let d = Tensor::<B, 4>::from_data(TensorData::new(delta, [b, 2, h, w]), device);
        let plus = values(warp(img.clone(), flow.clone() + d.clone()) * up.clone());
        let minus = values(warp(img.clone(), flow.clone() - d) * up.clone());
        for bi in 0..b {
            for p in 0..h * w {
                let fd: f32 = (0..c)
                    .map(|ci| {
                        let i = (bi * c + ci) * h * w + p;
                        (plus[i] - minus[i]) / (2.0 * eps)
                    })
                    .sum();
                let an = gf[(bi * 2 + axis) * h * w + p];
                assert!(
                    (fd - an).abs() <= 2e-3 + 2e-3 * an.abs(),
                    "d/d{} at ({bi},{p}): fd {fd}, analytic {an}",
                    ["u", "v"][axis]
                );
            }
        }
    }
    let dir = random::<B>(shape, -1.0, 1.0, device);
    let l0: f32 = values((warp(img.clone(), flow.clone()) * up.clone()).sum())[0];
    let l1: f32 = values((warp(img + dir.clone(), flow) * up).sum())[0];
    let an: f32 = values((gi * dir).sum())[0];
    assert!(
        (l1 - l0 - an).abs() <= 1e-3 * (1.0 + an.abs()),
        "directional: fd {}, analytic {an}",
        l1 - l0
    );
}

/// Shapes: non-square, H = 1, W = 1, 1x1, batch > 1, one channel, many channels.
pub fn check_shapes<B: WarpBackend>(device: &B::Device) {
    for shape in [
        [1, 1, 5, 17],
        [3, 2, 17, 5],
        [2, 3, 1, 9],
        [2, 3, 9, 1],
        [1, 2, 1, 1],
        [4, 1, 6, 6],
        [1, 16, 4, 7],
    ] {
        check_against_reference::<B>(device, shape, 3.0);
    }
}

/// The image gradient is bitwise reproducible, even with many outputs sampling the same pixels
/// (converging flow), and the forward too.
pub fn check_determinism<B: WarpBackend>(device: &B::Device) {
    let shape = [2, 3, 32, 48];
    let [b, _, h, w] = shape;
    let img = random::<B>(shape, -1.0, 1.0, device);
    let up = random::<B>(shape, -1.0, 1.0, device);
    // Large flows: most samples clamp onto a few border pixels -> hundreds of contributions each.
    for range in [2.0, 60.0] {
        let flow = random::<B>([b, 2, h, w], -range, range, device);
        let (gi1, gf1) = warp_backward(img.clone(), flow.clone(), up.clone());
        let (gi2, gf2) = warp_backward(img.clone(), flow.clone(), up.clone());
        assert_eq!(
            bits(gi1.clone()),
            bits(gi2),
            "grad_img not deterministic (flow ±{range})"
        );
        assert_eq!(
            bits(gf1),
            bits(gf2),
            "grad_flow not deterministic (flow ±{range})"
        );
        let (_, ref_gi, _) = autodiff_grads(img.clone(), flow, up.clone(), false);
        assert_close(
            "determinism grad_img",
            &values(gi1),
            &values(ref_gi),
            1e-4,
            1e-4,
        );
    }
}

/// f16 storage against f32: same op on the f16-rounded inputs, f16-level tolerance.
pub fn check_f16<B: WarpBackend>(device: &B::Device) {
    let shape = [2, 3, 12, 20];
    let [b, _, h, w] = shape;
    let img = random::<B>(shape, -1.0, 1.0, device).cast(DType::F16);
    let flow = random::<B>([b, 2, h, w], -3.0, 3.0, device).cast(DType::F16);
    let up = random::<B>(shape, -1.0, 1.0, device).cast(DType::F16);
    let out16 = warp(img.clone(), flow.clone());
    assert_eq!(out16.dtype(), DType::F16);
    let (gi16, gf16) = warp_backward(img.clone(), flow.clone(), up.clone());
    assert_eq!(gi16.dtype(), DType::F16);
    assert_eq!(gf16.dtype(), DType::F16);
    let f32_ = |t: Tensor<B, 4>| t.cast(DType::F32);
    let out32 = warp(f32_(img.clone()), f32_(flow.clone()));
    let (gi32, gf32) = warp_backward(f32_(img), f32_(flow), f32_(up));
    assert_close("f16 out", &values(out16), &values(out32), 2e-3, 2e-3);
    assert_close("f16 grad_img", &values(gi16), &values(gi32), 2e-3, 2e-3);
    assert_close("f16 grad_flow", &values(gf16), &values(gf32), 5e-3, 1e-2);
}

/// Strided inputs (permuted image, flow sliced out of a larger tensor), element-wise ops around the
/// warp (which a fusion backend fuses around the custom op), and autodiff with only one input
/// tracked.
pub fn check_composition<B: WarpBackend>(device: &B::Device) {
    let [b, c, h, w] = [2, 3, 10, 14];
    let img = random::<B>([b, h, w, c], -1.0, 1.0, device).permute([0, 3, 1, 2]);
    let flow = random::<B>([b, 5, h, w], -4.0, 4.0, device).narrow(1, 2, 2);
    let up = random::<B>([b, c, h, w], -1.0, 1.0, device);
    let expected = warp_reference(img.clone() * 2.0 + 0.5, flow.clone() * 0.5) * 3.0 - 1.0;
    let got = warp(img.clone() * 2.0 + 0.5, flow.clone() * 0.5) * 3.0 - 1.0;
    assert_close("composed", &values(got), &values(expected), 1e-5, 1e-5);

    let (_, ref_gi, ref_gf) = autodiff_grads(img.clone(), flow.clone(), up.clone(), false);
    // Only the image tracked.
    let ai = Tensor::<Autodiff<B>, 4>::from_inner(img.clone()).require_grad();
    let af = Tensor::<Autodiff<B>, 4>::from_inner(flow.clone());
    let grads = (warp(ai.clone(), af) * Tensor::from_inner(up.clone()))
        .sum()
        .backward();
    assert_close(
        "img-only grad",
        &values(ai.grad(&grads).unwrap()),
        &values(ref_gi),
        1e-4,
        1e-5,
    );
    // Only the flow tracked, through an op before the warp.
    let ai = Tensor::<Autodiff<B>, 4>::from_inner(img);
    let af = Tensor::<Autodiff<B>, 4>::from_inner(flow).require_grad();
    let grads = (warp(ai, af.clone() * 1.0) * Tensor::from_inner(up))
        .sum()
        .backward();
    assert_close(
        "flow-only grad",
        &values(af.grad(&grads).unwrap()),
        &values(ref_gf),
        1e-4,
        1e-4,
    );
}

/// `ConvBackend`'s f32 convolutions (`conv2d_f32`, `conv_transpose2d_f32`) against Burn's on the
/// CPU backend: strides, padding, dilation, output padding, bias and none, groups.
pub fn check_conv_f32<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
    use burn::tensor::{TensorPrimitive, module};
    type Cpu = burn::backend::Flex;
    let cpu = Default::default();
    let pair = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let t = Tensor::<Cpu, 1>::random([n], Distribution::Uniform(-1.0, 1.0), &cpu);
        let data = t.into_data();
        (
            Tensor::<Cpu, 1>::from_data(data.clone(), &cpu),
            Tensor::<B, 1>::from_data(data, device),
            shape,
        )
    };
    let t4 = |(c, d, s): &(Tensor<Cpu, 1>, Tensor<B, 1>, Vec<usize>)| {
        let s: [usize; 4] = s.clone().try_into().unwrap();
        (c.clone().reshape(s), d.clone().reshape(s))
    };
    let prim = |t: Tensor<B, 4>| t.into_primitive().tensor();
    let back = |t| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t));

    for (x, w, bias, options) in [
        (
            [2, 3, 9, 12],
            [4, 3, 3, 3],
            true,
            ConvOptions::new([2, 1], [1, 0], [1, 2], 1),
        ),
        (
            [1, 4, 8, 8],
            [6, 2, 3, 3],
            false,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 2),
        ),
    ] {
        let (x, w, b) = (pair(x.to_vec()), pair(w.to_vec()), pair(vec![w[0]]));
        let ((xc, xd), (wc, wd)) = (t4(&x), t4(&w));
        let (bc, bd) = (bias.then(|| b.0.clone()), bias.then(|| b.1.clone()));
        let want = module::conv2d(xc, wc, bc, options.clone());
        let got = back(B::conv2d_f32(
            prim(xd),
            prim(wd),
            bd.map(|t| t.into_primitive().tensor()),
            options.clone(),
        ));
        assert_eq!(got.dims(), want.dims(), "conv2d {options:?}: shape");
        assert_close(
            &format!("conv2d {options:?}"),
            &values(got),
            &values(want),
            1e-5,
            1e-5,
        );
    }
    for (x, w, bias, options) in [
        (
            [2, 3, 5, 6],
            [3, 2, 4, 4],
            true,
            ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1),
        ),
        (
            [1, 4, 4, 5],
            [4, 3, 3, 3],
            false,
            ConvTransposeOptions::new([2, 3], [1, 0], [1, 2], [1, 1], 2),
        ),
    ] {
        let (x, w, b) = (
            pair(x.to_vec()),
            pair(w.to_vec()),
            pair(vec![w[1] * options.groups]),
        );
        let ((xc, xd), (wc, wd)) = (t4(&x), t4(&w));
        let (bc, bd) = (bias.then(|| b.0.clone()), bias.then(|| b.1.clone()));
        let want = module::conv_transpose2d(xc, wc, bc, options.clone());
        let got = back(B::conv_transpose2d_f32(
            prim(xd),
            prim(wd),
            bd.map(|t| t.into_primitive().tensor()),
            options.clone(),
        ));
        assert_eq!(
            got.dims(),
            want.dims(),
            "conv_transpose2d {options:?}: shape"
        );
        assert_close(
            &format!("conv_transpose2d {options:?}"),
            &values(got),
            &values(want),
            1e-5,
            1e-5,
        );
    }
}

/// The training convolution (`vsr_kernels::conv::conv2d` under `Autodiff<B>`: LibTorch's own graph,
/// else Burn's or the tap products as `conv_grad::weight_grad_for` says) against Burn's convolution
/// under autodiff on the CPU backend: output and the gradients of input, weight and bias; with and
/// without an input gradient; padding, dilation, stride, groups. The tolerance allows TF32 on GPUs:
/// a sum of K products of values in [-1, 1], each rounded to TF32 (2^-11), is off by about
/// sqrt(K) * 1.2e-4 (K up to 405 here: 2.5e-3), and the worst of a few hundred outputs by 4-5 times
/// that; 2e-2 failed about one run in ten on cuDNN (H100, errors of 2.0-2.3e-2). A wrong gradient
/// is off by O(1).
pub fn check_conv_train<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    use burn::tensor::Tolerance;
    use burn::tensor::ops::ConvOptions;
    // Weights of the output in the loss, in [-1, 1], the same on every backend.
    let out_weights = |dims: [usize; 4]| -> Vec<f32> {
        (0..dims.iter().product::<usize>()).map(|i| ((i * 7919) % 13) as f32 / 6.0 - 1.0).collect()
    };
    type Cpu = Autodiff<burn::backend::Flex>;
    let cpu = Default::default();
    let tol = Tolerance::<f32>::rel_abs(1e-2, 5e-2);
    for (x_shape, w_shape, x_grad, options) in [
        ([2, 3, 9, 11], [4, 3, 5, 5], true, ConvOptions::new([1, 1], [2, 2], [1, 1], 1)),
        ([3, 1, 12, 10], [5, 1, 9, 9], false, ConvOptions::new([1, 1], [4, 4], [1, 1], 1)),
        ([2, 4, 9, 8], [6, 2, 3, 3], true, ConvOptions::new([2, 1], [1, 2], [1, 2], 2)),
    ] {
        let data = |shape: [usize; 4]| Tensor::<burn::backend::Flex, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), &Default::default()).into_data();
        let (xv, wv) = (data(x_shape), data(w_shape));
        let bv = Tensor::<burn::backend::Flex, 1>::random([w_shape[0]], Distribution::Uniform(-1.0, 1.0), &Default::default()).into_data();
        let run = |xv, wv, bv| {
            let dev = device;
            let x = Tensor::<Autodiff<B>, 4>::from_data(xv, dev);
            let x = if x_grad { x.require_grad() } else { x };
            let w = Tensor::<Autodiff<B>, 4>::from_data(wv, dev).require_grad();
            let b = Tensor::<Autodiff<B>, 1>::from_data(bv, dev).require_grad();
            let y = vsr_kernels::conv::conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
            let r = Tensor::<Autodiff<B>, 1>::from_data(out_weights(y.dims()).as_slice(), dev).reshape(y.dims());
            let g = (y.clone() * r).sum().backward();
            (y.inner().into_data(), x.grad(&g).map(|t| t.into_data()), w.grad(&g).unwrap().into_data(), b.grad(&g).unwrap().into_data())
        };
        let got = run(xv.clone(), wv.clone(), bv.clone());
        // Reference: Burn's convolution on the CPU, same weights and output weighting.
        let x = Tensor::<Cpu, 4>::from_data(xv, &cpu);
        let x = if x_grad { x.require_grad() } else { x };
        let w = Tensor::<Cpu, 4>::from_data(wv, &cpu).require_grad();
        let b = Tensor::<Cpu, 1>::from_data(bv, &cpu).require_grad();
        let y = burn::tensor::module::conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
        let r = Tensor::<Cpu, 1>::from_data(out_weights(y.dims()).as_slice(), &cpu).reshape(y.dims());
        let g = (y.clone() * r).sum().backward();
        got.0.assert_approx_eq::<f32>(&y.inner().into_data(), tol);
        assert_eq!(got.1.is_some(), x_grad, "input gradient present iff asked");
        if let Some(gx) = got.1 {
            gx.assert_approx_eq::<f32>(&x.grad(&g).unwrap().into_data(), tol);
        }
        got.2.assert_approx_eq::<f32>(&w.grad(&g).unwrap().into_data(), tol);
        got.3.assert_approx_eq::<f32>(&b.grad(&g).unwrap().into_data(), tol);
    }
}

/// The fused training BatchNorm + LeakyReLU (`vsr_kernels::conv::batch_norm_act` under
/// `Autodiff<B>`, for backends that have it) against Burn's BatchNorm and `leaky_relu` under
/// autodiff on the CPU backend: output, gradients of input, gamma and beta, and the running
/// statistics, which follow PyTorch (momentum 0.1, *unbiased* batch variance; Burn's own
/// BatchNorm uses the biased one), computed here in f64 from the input.
pub fn check_batch_norm_train<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    check_batch_norm_with::<B>(device, |bn, x, slope| {
        vsr_kernels::conv::batch_norm_act(bn, x, slope).unwrap_or_else(|_| panic!("no fused BatchNorm on this backend"))
    });
}

/// The fused training BatchNorm + LeakyReLU on an f16 input (f32 statistics and affine
/// parameters, as PyTorch's autocast) against the same on the input's f32 values: output (f16),
/// input gradient (f16), gamma and beta gradients (f32) and the running statistics.
pub fn check_batch_norm_train_f16<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    use burn::nn::BatchNormConfig;
    let shape = [3, 8, 17, 30];
    let x = Tensor::<B, 4>::random(shape, Distribution::Uniform(-1.5, 2.5), device).cast(DType::F16).cast(DType::F32);
    let r = Tensor::<B, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), device).cast(DType::F16).cast(DType::F32);
    let mut outs = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        let bn = BatchNormConfig::new(shape[1]).init::<Autodiff<B>>(device);
        let xa = Tensor::<Autodiff<B>, 4>::from_inner(x.clone().cast(dtype)).require_grad();
        let y = vsr_kernels::conv::batch_norm_act(&bn, xa.clone(), Some(0.1))
            .unwrap_or_else(|_| panic!("no fused BatchNorm on this backend"));
        assert_eq!(y.dtype(), dtype, "the output keeps the input's dtype");
        let g = (y.clone() * Tensor::from_inner(r.clone().cast(dtype))).sum().backward();
        let gx = xa.grad(&g).expect("input gradient");
        assert_eq!(gx.dtype(), dtype, "the input gradient keeps the input's dtype");
        let f = |t: Tensor<B, 4>| values(t.cast(DType::F32));
        let v = |t: Tensor<B, 1>| t.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
        outs.push((
            f(y.inner()),
            f(gx),
            v(bn.gamma.val().grad(&g).expect("gamma gradient")),
            v(bn.beta.val().grad(&g).expect("beta gradient")),
            v(bn.running_mean.value_sync().inner()),
            v(bn.running_var.value_sync().inner()),
        ));
    }
    let (a, b) = (&outs[0], &outs[1]);
    assert_close("f16 BatchNorm output", &b.0, &a.0, 1e-2, 1e-2);
    assert_close("f16 BatchNorm input gradient", &b.1, &a.1, 2e-2, 2e-3);
    // gamma's and beta's gradients sum 1530 f16 products per channel
    assert_close("f16 BatchNorm gamma gradient", &b.2, &a.2, 1e-2, 0.5);
    assert_close("f16 BatchNorm beta gradient", &b.3, &a.3, 1e-2, 0.5);
    assert_close("f16 BatchNorm running mean", &b.4, &a.4, 1e-3, 1e-3);
    assert_close("f16 BatchNorm running variance", &b.5, &a.5, 1e-3, 1e-3);
}

/// `vsr_kernels::conv::leaky_relu` (one pass where the backend has it) against the definition,
/// in f32 and f16, values on both sides of 0 and 0 itself; and its gradient under autodiff.
pub fn check_leaky_relu<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    let slope = 0.1;
    let xs: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) * 0.37).chain([0.0, -0.0, 1e-3, -1e-3]).collect();
    let expect: Vec<f32> = xs.iter().map(|&x| if x < 0.0 { x * slope as f32 } else { x }).collect();
    for dtype in [DType::F32, DType::F16] {
        let x = Tensor::<B, 1>::from_floats(xs.as_slice(), device).cast(dtype).reshape([2, 2, 17, 1]);
        let y = vsr_kernels::conv::leaky_relu(x, slope);
        assert_eq!(y.dtype(), dtype, "leaky_relu changed the dtype");
        let got = y.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
        let tol = if dtype == DType::F16 { 1e-2 } else { 0.0 };
        for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
            assert!((g - e).abs() <= tol * e.abs().max(1e-3), "{dtype:?} leaky_relu({}) = {g}, expected {e}", xs[i]);
        }
    }
    let x = Tensor::<Autodiff<B>, 1>::from_floats(xs.as_slice(), device).require_grad();
    let grads = vsr_kernels::conv::leaky_relu(x.clone(), slope).sum().backward();
    let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    for (x, g) in xs.iter().zip(g) {
        let e = if *x < 0.0 { slope as f32 } else { 1.0 };
        assert!((g - e).abs() < 1e-6, "d leaky_relu / dx at {x}: {g}, expected {e}");
    }
}

/// [`check_batch_norm_train`] for the tensor-op BatchNorm of every backend.
pub fn check_batch_norm_ops<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    check_batch_norm_with::<B>(device, vsr_kernels::conv::batch_norm_act_ops);
}

fn check_batch_norm_with<B: vsr_kernels::conv::ConvBackend>(
    device: &B::Device,
    bn_act: impl Fn(&burn::nn::BatchNorm<Autodiff<B>>, Tensor<Autodiff<B>, 4>, Option<f64>) -> Tensor<Autodiff<B>, 4>,
) {
    use burn::module::{Param, RunningState};
    use burn::nn::{BatchNorm, BatchNormConfig};
    use burn::tensor::Tolerance;
    let (n, c, h, w) = (3, 4, 5, 6);
    let cpu = Default::default();
    let data = |shape: Vec<usize>, lo: f32, hi: f32| {
        Tensor::<burn::backend::Flex, 1>::random([shape.iter().product::<usize>()], Distribution::Uniform(lo.into(), hi.into()), &cpu)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap()
    };
    let xv = data(vec![n, c, h, w], -1.5, 2.5);
    let (gv, bv) = (data(vec![c], 0.5, 1.5), data(vec![c], -0.5, 0.5));
    let (mv, vv) = (data(vec![c], -0.2, 0.2), data(vec![c], 0.5, 2.0));
    let rv: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 7919) % 13) as f32 / 6.0 - 1.0).collect();
    fn bn_of<A: Backend>(g: &[f32], b: &[f32], m: &[f32], v: &[f32], device: &A::Device) -> BatchNorm<A> {
        let mut bn = BatchNormConfig::new(g.len()).init::<A>(device);
        bn.gamma = Param::from_tensor(Tensor::from_floats(g, device));
        bn.beta = Param::from_tensor(Tensor::from_floats(b, device));
        bn.running_mean = RunningState::new(Tensor::from_floats(m, device));
        bn.running_var = RunningState::new(Tensor::from_floats(v, device));
        bn
    }
    // Ours.
    let bn = bn_of::<Autodiff<B>>(&gv, &bv, &mv, &vv, device);
    let x = Tensor::<Autodiff<B>, 1>::from_floats(xv.as_slice(), device).reshape([n, c, h, w]).require_grad();
    let y = bn_act(&bn, x.clone(), Some(0.1));
    let r = Tensor::<Autodiff<B>, 1>::from_floats(rv.as_slice(), device).reshape([n, c, h, w]);
    let g = (y.clone() * r).sum().backward();
    // Burn's on the CPU.
    type Cpu = Autodiff<burn::backend::Flex>;
    let bn_ref = bn_of::<Cpu>(&gv, &bv, &mv, &vv, &cpu);
    let xr = Tensor::<Cpu, 1>::from_floats(xv.as_slice(), &cpu).reshape([n, c, h, w]).require_grad();
    let yr = burn::tensor::activation::leaky_relu(bn_ref.forward(xr.clone()), 0.1);
    let rr = Tensor::<Cpu, 1>::from_floats(rv.as_slice(), &cpu).reshape([n, c, h, w]);
    let gr = (yr.clone() * rr).sum().backward();
    let tol = Tolerance::<f32>::rel_abs(1e-4, 1e-4);
    y.inner().into_data().assert_approx_eq::<f32>(&yr.inner().into_data(), tol);
    x.grad(&g).unwrap().into_data().assert_approx_eq::<f32>(&xr.grad(&gr).unwrap().into_data(), tol);
    bn.gamma.val().grad(&g).unwrap().into_data().assert_approx_eq::<f32>(&bn_ref.gamma.val().grad(&gr).unwrap().into_data(), tol);
    bn.beta.val().grad(&g).unwrap().into_data().assert_approx_eq::<f32>(&bn_ref.beta.val().grad(&gr).unwrap().into_data(), tol);
    // Running statistics: 0.9 old + 0.1 batch (mean; unbiased variance).
    let count = (n * h * w) as f64;
    let (mut want_m, mut want_v) = (Vec::new(), Vec::new());
    for ch in 0..c {
        let vals: Vec<f64> = (0..n).flat_map(|i| (0..h * w).map(move |k| (i * c + ch) * h * w + k)).map(|k| xv[k] as f64).collect();
        let mean = vals.iter().sum::<f64>() / count;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0);
        want_m.push((0.9 * mv[ch] as f64 + 0.1 * mean) as f32);
        want_v.push((0.9 * vv[ch] as f64 + 0.1 * var) as f32);
    }
    bn.running_mean.value_sync().into_data().assert_approx_eq::<f32>(&TensorData::new(want_m, [c]), tol);
    bn.running_var.value_sync().into_data().assert_approx_eq::<f32>(&TensorData::new(want_v, [c]), tol);

    // Two forwards (micro-batches) before one backward: the second forward's update of the running
    // statistics must not write into anything the first one's backward still needs.
    let bn = bn_of::<Autodiff<B>>(&gv, &bv, &mv, &vv, device);
    let x1 = Tensor::<Autodiff<B>, 1>::from_floats(xv.as_slice(), device).reshape([n, c, h, w]).require_grad();
    let y1 = bn_act(&bn, x1.clone(), Some(0.1));
    let _ = bn.running_mean.value_sync();
    let y2 = bn_act(&bn, x1.clone() * 0.5, Some(0.1));
    let _ = bn.running_var.value_sync();
    let g = (y1.sum() + y2.sum()).backward();
    assert!(x1.grad(&g).is_some(), "input gradient after two forwards");
}

/// `vsr_kernels::conv::bias_leaky_relu` (one pass where the backend has it) against its
/// definition `leaky_relu(x + bias)`: f32 and f16, an NCHW input and the backend's convolution
/// layout (channels-last on LibTorch's CUDA), a value count that is not a multiple of 4, values
/// on both sides of 0; under autodiff both with nothing to differentiate (the inner backend's
/// path) and with gradients for x and the bias (checked against the definition's).
pub fn check_bias_leaky_relu<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    use burn::tensor::ElementConversion;
    use vsr_kernels::conv::{bias_leaky_relu, to_conv_layout};
    let slope = 0.1;
    for (shape, dtype) in [([2, 5, 6, 7], DType::F32), ([2, 5, 6, 7], DType::F16), ([3, 8, 4, 4], DType::F32), ([1, 3, 3, 3], DType::F16)] {
        let c = shape[1];
        let x = Tensor::<B, 4>::random(shape, Distribution::Uniform(-2.0, 2.0), device);
        let b = Tensor::<B, 1>::random([c], Distribution::Uniform(-0.5, 0.5), device);
        let want = {
            let z = x.clone() + b.clone().reshape([1, c, 1, 1]);
            let neg = z.clone().lower_elem(0.0);
            z.clone().mask_where(neg, z * slope)
        };
        let tol = if dtype == DType::F16 { 4e-3 } else { 1e-6 };
        for input in [x.clone(), to_conv_layout(x.clone())] {
            let got = bias_leaky_relu(input.cast(dtype), b.clone(), slope);
            assert_eq!(got.dtype(), dtype, "bias_leaky_relu changed the dtype");
            assert_eq!(got.dims(), shape);
            let d = (got.cast(DType::F32) - want.clone()).abs().max().into_scalar().elem::<f32>();
            assert!(d <= tol * 2.5, "{shape:?} {dtype:?}: bias_leaky_relu differs from its definition by {d}");
        }
    }
    // Under autodiff.
    let (shape, c) = ([2, 4, 5, 3], 4);
    let xv = Tensor::<B, 4>::random(shape, Distribution::Uniform(-2.0, 2.0), device);
    let bv = Tensor::<B, 1>::random([c], Distribution::Uniform(-0.5, 0.5), device);
    let r = Tensor::<Autodiff<B>, 4>::from_inner(Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), device));
    let untracked = bias_leaky_relu(Tensor::<Autodiff<B>, 4>::from_inner(xv.clone()), Tensor::from_inner(bv.clone()), slope);
    let x = Tensor::<Autodiff<B>, 4>::from_inner(xv.clone()).require_grad();
    let b = Tensor::<Autodiff<B>, 1>::from_inner(bv.clone()).require_grad();
    let y = bias_leaky_relu(x.clone(), b.clone(), slope);
    let g = (y.clone() * r.clone()).sum().backward();
    let (x2, b2) = (Tensor::<Autodiff<B>, 4>::from_inner(xv).require_grad(), Tensor::<Autodiff<B>, 1>::from_inner(bv).require_grad());
    let z = x2.clone() + b2.clone().reshape([1, c, 1, 1]);
    let y2 = burn::tensor::activation::leaky_relu(z, slope);
    let g2 = (y2.clone() * r).sum().backward();
    let close = |a: Tensor<B, 4>, e: Tensor<B, 4>, what: &str| {
        let d = (a - e).abs().max().into_scalar().elem::<f32>();
        assert!(d <= 1e-5, "bias_leaky_relu under autodiff: {what} differs by {d}");
    };
    close(untracked.inner(), y2.clone().inner(), "output (nothing tracked)");
    close(y.inner(), y2.inner(), "output");
    close(x.grad(&g).unwrap(), x2.grad(&g2).unwrap(), "x gradient");
    close(b.grad(&g).unwrap().reshape([1, c, 1, 1]), b2.grad(&g2).unwrap().reshape([1, c, 1, 1]), "bias gradient");
}

/// The tap-product weight gradient (`VSR_WGRAD=taps`) on f16 tensors: f16 out, and the f32
/// gradient to f16's precision. Its input is zero-padded first: Burn's `pad` builds the padded
/// tensor in the default float dtype (f32), which fusion rejects with a panic for an f16 input
/// (the fp16 training step on CUDA died of it). Also the padding helper itself, asymmetric.
pub fn check_taps_f16<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    use burn::tensor::ops::ConvOptions;
    use vsr_kernels::conv::pad_zeros;
    use vsr_kernels::conv_grad::conv2d_weight_grad_taps;
    let x = random::<B>([2, 3, 9, 11], -1.0, 1.0, device);
    let padded = pad_zeros(x.clone().cast(DType::F16), [1, 2], [3, 0]);
    assert_eq!(padded.dtype(), DType::F16);
    assert_eq!(padded.dims(), [2, 3, 12, 14]);
    let x16 = values(x.clone().cast(DType::F16).cast(DType::F32));
    let inner = padded.clone().slice([0..2, 0..3, 1..10, 3..14]).cast(DType::F32);
    assert_close("pad_zeros inside", &values(inner), &x16, 0.0, 0.0);
    let total: f32 = values(padded.cast(DType::F32)).iter().map(|v| v.abs()).sum();
    let inside: f32 = x16.iter().map(|v| v.abs()).sum();
    assert!((total - inside).abs() <= 1e-3 * inside, "pad_zeros: non-zero border ({total} vs {inside})");

    let w = random::<B>([4, 3, 5, 5], -1.0, 1.0, device);
    let dy = random::<B>([2, 4, 9, 11], -1.0, 1.0, device);
    let options = ConvOptions::new([1, 1], [2, 2], [1, 1], 1);
    let grad = |x: Tensor<B, 4>, w: Tensor<B, 4>, dy: Tensor<B, 4>| -> Tensor<B, 4> {
        let g = conv2d_weight_grad_taps::<B>(
            x.into_primitive().tensor(),
            w.into_primitive().tensor(),
            dy.into_primitive().tensor(),
            options.clone(),
        );
        Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(g))
    };
    let h = |t: &Tensor<B, 4>| t.clone().cast(DType::F16);
    let g16 = grad(h(&x), h(&w), h(&dy));
    assert_eq!(g16.dtype(), DType::F16);
    let f = |t: &Tensor<B, 4>| h(t).cast(DType::F32);
    let g32 = grad(f(&x), f(&w), f(&dy));
    // sums of 198 products of f16 values, accumulated in f16 at worst
    assert_close("taps f16", &values(g16.cast(DType::F32)), &values(g32), 1e-2, 5e-2);
}

/// The backend's vendor convolutions (`ConvBackend::vendor_conv`: cuDNN on CUDA) against Burn's
/// on the CPU, in f32 (TF32 allowed, as trained) and f16: forward with and without bias (stride,
/// padding, dilation, groups), FlowNetSD's transposed 4x4 / 2 and a grouped one with output
/// padding, and both gradients. The inputs' widths are odd, so CubeCL pads their rows (the
/// strided descriptors and the filter packing run), and one input is a transposed view (made
/// contiguous first). Fails where the backend should have them and does not (cuDNN not loaded).
pub fn check_vendor_conv<B: vsr_kernels::conv::ConvBackend>(device: &B::Device) {
    use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor, ModuleOps};
    use burn::tensor::{TensorPrimitive, module};
    use vsr_kernels::conv::{conv_transpose2d, conv2d};
    type Cpu = burn::backend::Flex;
    assert!(B::vendor_conv(), "no vendor convolutions on this backend: is libcudnn.so.9 on the library path?");
    let cpu = Default::default();
    let data = |shape: [usize; 4]| Tensor::<Cpu, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), &cpu).into_data();
    let on = |d: &TensorData, dtype: DType| Tensor::<B, 4>::from_data(d.clone(), device).cast(dtype);
    let prim = |t: Tensor<B, 4>| -> FloatTensor<B> { t.into_primitive().tensor() };
    let back = |t: FloatTensor<B>| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t));
    for (dtype, rtol, atol) in [(DType::F32, 1e-2, 2e-2), (DType::F16, 2e-2, 5e-2)] {
        for (xs, ws, bias, view, options) in [
            ([2, 3, 9, 13], [4, 3, 3, 3], true, false, ConvOptions::new([2, 1], [1, 0], [1, 2], 1)),
            ([1, 4, 8, 15], [6, 2, 3, 3], false, false, ConvOptions::new([1, 1], [1, 1], [1, 1], 2)),
            ([2, 5, 7, 9], [3, 5, 5, 5], true, true, ConvOptions::new([1, 1], [2, 2], [1, 1], 1)),
        ] {
            let name = format!("{dtype:?} conv2d x {xs:?} w {ws:?} {options:?}");
            let (xd, wd) = (data(xs), data(ws));
            let bd = Tensor::<Cpu, 1>::random([ws[0]], Distribution::Uniform(-1.0, 1.0), &cpu).into_data();
            let x = if view {
                // The same values, as a view with C last in memory.
                let t = Tensor::<Cpu, 4>::from_data(xd.clone(), &cpu).permute([0, 2, 3, 1]).into_data();
                Tensor::<B, 4>::from_data(t, device).cast(dtype).permute([0, 3, 1, 2])
            } else {
                on(&xd, dtype)
            };
            let b = bias.then(|| Tensor::<B, 1>::from_data(bd.clone(), device).cast(dtype));
            let got = conv2d(x.clone(), on(&wd, dtype), b, options.clone());
            let (xc, wc) = (Tensor::<Cpu, 4>::from_data(xd.clone(), &cpu), Tensor::<Cpu, 4>::from_data(wd.clone(), &cpu));
            let want = module::conv2d(xc.clone(), wc.clone(), bias.then(|| Tensor::from_data(bd.clone(), &cpu)), options.clone());
            assert_eq!((got.dims(), got.dtype()), (want.dims(), dtype), "{name}: shape, dtype");
            assert_close(&name, &values(got.cast(DType::F32)), &values(want.clone()), rtol, atol);

            // Both gradients of sum(conv2d(x, w) * dy).
            let dyd = data(want.dims());
            let [gx, gw] = B::vendor_conv2d_backward(prim(x), prim(on(&wd, dtype)), prim(on(&dyd, dtype)), options.clone(), [true, true]);
            let dyc = Tensor::<Cpu, 4>::from_data(dyd, &cpu);
            let prim_c = |t: Tensor<Cpu, 4>| -> FloatTensor<Cpu> { t.into_primitive().tensor() };
            let want_gx = Cpu::conv2d_x_backward(prim_c(xc.clone()), prim_c(wc.clone()), prim_c(dyc.clone()), options.clone());
            let want_gw = Cpu::conv2d_weight_backward(prim_c(xc), prim_c(wc), prim_c(dyc), options.clone());
            let cpu_t = |t| Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(t));
            for (what, g, w) in [("input", gx, want_gx), ("weight", gw, want_gw)] {
                let g = back(g.unwrap_or_else(|| panic!("{name}: {what} gradient missing")));
                assert_eq!(g.dtype(), dtype, "{name}: {what} gradient dtype");
                // a weight gradient sums up to 2 * 9 * 13 products: scale the tolerance
                let scale = if what == "weight" { 4.0 } else { 1.0 };
                assert_close(&format!("{name}: {what} gradient"), &values(g.cast(DType::F32)), &values(cpu_t(w)), rtol, atol * scale);
            }
        }
        for (xs, ws, bias, options) in [
            ([2, 3, 5, 15], [3, 2, 4, 4], true, ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1)),
            ([1, 4, 4, 5], [4, 3, 3, 3], false, ConvTransposeOptions::new([2, 3], [1, 0], [1, 2], [1, 1], 2)),
        ] {
            let name = format!("{dtype:?} conv_transpose2d x {xs:?} w {ws:?} {options:?}");
            let (xd, wd) = (data(xs), data(ws));
            let bd = Tensor::<Cpu, 1>::random([ws[1] * options.groups], Distribution::Uniform(-1.0, 1.0), &cpu).into_data();
            let b = bias.then(|| Tensor::<B, 1>::from_data(bd.clone(), device).cast(dtype));
            let got = conv_transpose2d(on(&xd, dtype), on(&wd, dtype), b, options.clone());
            let want = module::conv_transpose2d(
                Tensor::<Cpu, 4>::from_data(xd, &cpu),
                Tensor::<Cpu, 4>::from_data(wd, &cpu),
                bias.then(|| Tensor::from_data(bd, &cpu)),
                options.clone(),
            );
            assert_eq!((got.dims(), got.dtype()), (want.dims(), dtype), "{name}: shape, dtype");
            assert_close(&name, &values(got.cast(DType::F32)), &values(want), rtol, atol);
        }
    }
}
