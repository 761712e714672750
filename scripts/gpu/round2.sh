#!/usr/bin/env bash
# On the GPU machine: the CUDA parity and kernel tests, then the warp benchmark against PyTorch.
set -uo pipefail
cd "$(dirname "$0")/../.."
export VSR_REPO_DIR=$PWD VSR_TEST_GPU=cuda
source scripts/gpu/env.sh  # unpacks .gpu/, LD_LIBRARY_PATH to its FFmpeg
nvidia-smi --query-gpu=name --format=csv,noheader
.gpu/cuda --ignored --test-threads 1 2>&1 | tee "$OUT/cuda_kernels.log" | grep -E "^test |result|error:" | head -40
.gpu/parity parity_on_requested_gpu --exact --ignored --nocapture 2>&1 | tee "$OUT/parity.log" | grep -E "max abs|result|error:"
V=.gpu/vsr
for p in fp32 fp16; do echo "== warp $p"; $V bench warp --backend cuda --precision $p --json "$OUT/warp_$p.json" 2>/dev/null | head -4; done
echo "== warp fp32, atomic grad_img"; VSR_WARP_ATOMIC=1 $V bench warp --backend cuda --json "$OUT/warp_fp32_atomic.json" 2>/dev/null | head -4
PY=/opt/torch/.venv/bin/python; $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280; $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 --fp16
