#!/usr/bin/env bash
# GPU call W: the warp kernels' speed (deterministic and atomic backward) against Burn's tensor ops
# and PyTorch's grid_sample, same GPU, same command. Each figure is printed as it is measured
# (a cold CubeCL autotune of the tensor-op reference can take minutes).
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
[ -x .gpu/vsr-tch ] && V=.gpu/vsr-tch
w() {  # time limit, log name, flags...
  local lim=$1 name=$2; shift 2
  timeout "$lim" $V bench warp --backend cuda --warmup 5 --runs 30 --json "$OUT/$name.json" "$@" >"$OUT/$name.log" 2>&1 \
    || echo "   $name: exit $?"
  grep -E "^\| [0-9]|^warp .*: |rror|panicked" "$OUT/$name.log"
}
w 150 warp_fp32 --precision fp32; stamp
w 90 warp_fp16 --precision fp16; stamp
VSR_WARP_ATOMIC=1 w 40 warp_fp32_atomic --precision fp32; stamp
timeout 60 $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 2>&1 | tail -3
timeout 60 $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 --fp16 2>&1 | tail -3; stamp
if [ -n "${UPSCALE_CUDA:-}" ]; then
  echo "== upscale throughput, CUDA (CubeCL, fp32 then fp16; cold autotune)"
  for p in fp32 fp16; do
    timeout "$UPSCALE_CUDA" $V bench upscale --backend cuda --sizes 480x270,960x540 --precision $p \
      --json "$OUT/upscale_cuda_$p.json" >"$OUT/upscale_cuda_$p.log" 2>&1 || echo "   upscale $p: exit $?"
    grep -E "^\||rror" "$OUT/upscale_cuda_$p.log"; stamp
  done
fi
