#!/usr/bin/env bash
# GPU call A: warp kernels (backward forced) and parity on CUDA, warp bench beside PyTorch's,
# the fp32 training step with an empty and with a warm kernel cache.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh

echo "== warp kernels on CUDA (backward kernels forced)"
VSR_WARP_BACKWARD_KERNEL=1 timeout 150 .gpu/cuda --ignored --test-threads 1 >"$OUT/cuda_kernels.log" 2>&1; verdict "$OUT/cuda_kernels.log"; stamp

echo "== parity vs PyTorch: TF32 autotuned convs (kernel backward), f32-only convs"
VSR_WARP_BACKWARD_KERNEL=1 timeout 150 .gpu/parity parity_on_requested_gpu --exact --ignored --nocapture >"$OUT/parity_tf32.log" 2>&1
grep -E "max abs|^test result|panicked" "$OUT/parity_tf32.log"
timeout 150 .gpu/parity parity_on_requested_gpu_f32_convolutions --exact --ignored --nocapture >"$OUT/parity_f32.log" 2>&1
grep -E "max abs|^test result|panicked" "$OUT/parity_f32.log"; stamp

echo "== warp bench: our kernel (deterministic, atomic), Burn's grid_sample path, PyTorch"
for p in fp32 fp16; do
  VSR_WARP_BACKWARD_KERNEL=1 timeout 60 $V bench warp --backend cuda --precision $p --json "$OUT/warp_$p.json" 2>&1 | grep -E "^\|"
done
VSR_WARP_BACKWARD_KERNEL=1 VSR_WARP_ATOMIC=1 timeout 60 $V bench warp --backend cuda --json "$OUT/warp_fp32_atomic.json" 2>&1 | grep -E "^\| cuda"
timeout 60 $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 2>&1 | tail -3
timeout 60 $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 --fp16 2>&1 | tail -3; stamp

echo "== training step fp32, batch 3, 512x960: empty cache, then warm"
rm -rf /tmp/vsr-cache
VSR_WARP_BACKWARD_KERNEL=1 timeout 300 $V bench step --backend cuda --precision fp32 --flownet $FLOWNET --iters 10 \
  --json "$OUT/step_fp32_cold.json" >"$OUT/step_fp32_cold.log" 2>&1; grep -E "^\||rror" "$OUT/step_fp32_cold.log"; stamp
save_cache
VSR_WARP_BACKWARD_KERNEL=1 timeout 120 $V bench step --backend cuda --precision fp32 --flownet $FLOWNET --iters 30 \
  --json "$OUT/step_fp32.json" >"$OUT/step_fp32.log" 2>&1; grep -E "^\||rror" "$OUT/step_fp32.log"; stamp
