#!/usr/bin/env bash
# On the GPU machine, after scripts/gpu/stage_tch.sh staged the LibTorch build in .gpu/: what
# LibTorch vsr loads, the parity, warp/convolution and engine tests on it, then `vsr bench step` (fp32 and fp16,
# batch 3 and 7, 512x960, 3 frames, the fixture FlowNetSD) and `vsr bench upscale` (fp32 and
# fp16, 480x270 and 960x540). Logs and JSON in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
export VSR_REPO_DIR=$PWD VSR_TEST_GPU=tch
OUT=${OUT:-$PWD/target/gpu-out}
mkdir -p "$OUT"
source scripts/gpu/env.sh # unpacks .gpu/, LD_LIBRARY_PATH to its FFmpeg and PyTorch's torch/lib
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
V=.gpu/vsr-tch
ldd $V | grep -E "torch|c10|not found" | tee "$OUT/ldd.txt"
$V info 2>&1 | tee "$OUT/info.txt"
$V info --json >"$OUT/info.json" 2>&1

echo "== parity (TF32 convolutions allowed, as PyTorch's default), then f32 convolutions"
for t in parity_on_requested_gpu parity_on_requested_gpu_f32_convolutions; do
  .gpu/parity-tch "$t" --exact --ignored --nocapture 2>&1 | tee "$OUT/$t.log" | grep -E "max abs|test result|panicked|error"
done
echo "== warp (grid_sample) and f32 convolutions on LibTorch's CUDA device, then its CPU"
.gpu/kernels-tch --include-ignored --test-threads 1 2>&1 | tee "$OUT/kernels_tch.log" | grep -E "^test |test result|panicked"
echo "== inference engine against the CPU"
.gpu/eval-tch engine_on_requested_gpu --exact --ignored --nocapture 2>&1 | tee "$OUT/engine.log" \
  | grep -E "difference|test result|panicked|error"

echo "== vsr bench step"
for p in fp32 fp16; do
  for b in 3 7; do
    $V bench step --backend tch --precision $p --batch $b --frames 3 --crop 512x960 \
      --flownet tests/fixtures/flownet_sd.pth.tar.gz --json "$OUT/step_tch_${p}_b$b.json" 2>&1 \
      | tee "$OUT/step_tch_${p}_b$b.log"
  done
done

echo "== vsr bench upscale"
for p in fp32 fp16; do
  $V bench upscale --backend tch --precision $p --sizes 480x270,960x540 \
    --json "$OUT/upscale_tch_$p.json" 2>&1 | tee "$OUT/upscale_tch_$p.log"
done
