#!/usr/bin/env bash
# GPU call S: the training step, fp32 then fp16, batch 3, 512x960: the first process tunes (cold),
# the second runs warm. Our warp backward kernel (verified on CUDA in call K) is forced.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
export VSR_WARP_BACKWARD_KERNEL=1
for p in ${PRECISIONS:-fp32 fp16}; do
  echo "== step $p cold"
  timeout ${COLD_S:-300} $V bench step --backend cuda --precision $p --flownet $FLOWNET --iters 10 \
    --json "$OUT/step_${p}_cold.json" 2>&1 | tee "$OUT/step_${p}_cold.log" | grep -E "^\||rror|tun"; stamp
  save_cache >/dev/null
  echo "== step $p warm"
  timeout 100 $V bench step --backend cuda --precision $p --flownet $FLOWNET --iters 30 \
    --json "$OUT/step_${p}.json" 2>&1 | tee "$OUT/step_${p}.log" | grep -E "^\||rror"; stamp
done
save_cache
