#!/usr/bin/env bash
# On the GPU machine, with binaries staged by scripts/gpu/stage.sh: is the warp backward right on
# CUDA now (branch `kernels`: scratch buffers no longer pitched), and what do f32-only
# convolutions do to FlowNetSD's parity and speed (vsr_kernels::conv, docs/conv_precision.md)?
# Short summary on stdout; full logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
export VSR_REPO_DIR=$PWD VSR_TEST_GPU=cuda
[ -x .gpu/vsr ] || { for f in .gpu/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done; chmod +x .gpu/*; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# Failing tests and the result line of a libtest log.
verdict() { grep -E "^test .* FAILED$|^test result|panicked at" "$1" | head -${2:-20}; echo "   ($(grep -c ' \.\.\. ok$' "$1") ok)"; }

echo "== 1. deterministic backward: each pass vs its host model (+ CUDA source as compiled, in \$OUT)"
CUBECL_DEBUG_LOG="$OUT/cubecl_passes.log" .gpu/cuda passes_against_model --ignored --nocapture >"$OUT/passes.log" 2>&1
grep -E "^zeros_client|^case|differ|^    \[|^test result|panicked" "$OUT/passes.log" | head -45
xz -T2 "$OUT/cubecl_passes.log" 2>/dev/null || gzip "$OUT/cubecl_passes.log"

echo "== 2. all warp kernel tests, backward kernels on (VSR_WARP_BACKWARD_KERNEL=1), twice"
for run in 1 2; do
  VSR_WARP_BACKWARD_KERNEL=1 .gpu/cuda --ignored --test-threads 1 >"$OUT/cuda_kernels_$run.log" 2>&1
  echo "-- run $run"; verdict "$OUT/cuda_kernels_$run.log"
done

echo "== 3. float-atomic grad_img (VSR_WARP_ATOMIC=1): accuracy checks only (not deterministic by design)"
VSR_WARP_BACKWARD_KERNEL=1 VSR_WARP_ATOMIC=1 .gpu/cuda golden_parity reference_random identity far_outside shapes \
  --ignored --test-threads 1 >"$OUT/cuda_atomic.log" 2>&1
verdict "$OUT/cuda_atomic.log"

echo "== 4. parity vs PyTorch (CPU golden): convolutions autotuned (TF32), warp backward kernel on"
VSR_WARP_BACKWARD_KERNEL=1 .gpu/parity parity_on_requested_gpu --exact --ignored --nocapture >"$OUT/parity_tf32.log" 2>&1
grep -E "max abs|^test result|panicked" "$OUT/parity_tf32.log"
echo "== 5. parity with f32-only convolutions (ConvPrecision::F32, tolerance 1e-4)"
.gpu/parity parity_on_requested_gpu_f32_convolutions --exact --ignored --nocapture >"$OUT/parity_f32.log" 2>&1
grep -E "max abs|^test result|panicked" "$OUT/parity_f32.log"

echo "== 6. benchmarks: warp with the backward kernel; FlowNetSD 512x960 with f32-only convolutions"
for p in fp32 fp16; do
  echo "-- warp $p, deterministic backward kernel"
  VSR_WARP_BACKWARD_KERNEL=1 .gpu/vsr bench warp --backend cuda --precision $p --json "$OUT/warp_${p}_kernel.json" 2>"$OUT/warp_${p}_kernel.err" | head -5
done
echo "-- warp fp32, float-atomic backward kernel"
VSR_WARP_BACKWARD_KERNEL=1 VSR_WARP_ATOMIC=1 .gpu/vsr bench warp --backend cuda --json "$OUT/warp_fp32_atomic.json" 2>"$OUT/warp_fp32_atomic.err" | head -5
echo "-- flownet, VSR_CONV_PRECISION=f32 (direct convolutions; TF32 reference: 7.22 ms warm, session 1)"
VSR_CONV_PRECISION=f32 timeout 300 .gpu/vsr bench flownet --backend cuda --size 512x960 \
  --flownet tests/fixtures/flownet_sd.pth.tar.gz --iters 20 --json "$OUT/flownet_f32.json" 2>"$OUT/flownet_f32.err" | head -4
