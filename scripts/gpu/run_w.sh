#!/usr/bin/env bash
# GPU call W: the warp kernels' speed (deterministic and atomic backward) against Burn's tensor ops
# and PyTorch's grid_sample, same GPU, same command.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
export VSR_WARP_BACKWARD_KERNEL=1
for p in fp32 fp16; do
  timeout 60 $V bench warp --backend cuda --precision $p --json "$OUT/warp_$p.json" 2>&1 | grep -E "^\| [0-9]|rror"
done
VSR_WARP_ATOMIC=1 timeout 60 $V bench warp --backend cuda --json "$OUT/warp_fp32_atomic.json" 2>&1 | grep -E "^\| [0-9]|rror"
timeout 60 $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 2>&1 | tail -3
timeout 60 $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 --fp16 2>&1 | tail -3; stamp
