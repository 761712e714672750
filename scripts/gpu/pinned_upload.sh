#!/usr/bin/env bash
# The CUDA backend's batch uploads through page-locked memory (vsr_kernels::upload) against
# `from_data` (VSR_PINNED_UPLOAD=0), in one call: the upload checks of .gpu/cuda, then
# `vsr train --backend cuda` both ways (fp16, batch 3, 512x960, Big Buck Bunny at 720p, NVDEC, the
# fixture FlowNetSD), then a profiled run with page-locked uploads (VSR_PROFILE, when .gpu/vsr has
# the `profile` feature) and `vsr bench step` for the same step on device-resident input.
# Needs .gpu/vsr and .gpu/cuda (scripts/gpu/stage.sh). Logs in $OUT/logs.tgz. QUICK=1: one run each
# way, no profiled run.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/cudnn_env.sh
STEPS=${STEPS:-150}
echo "== .gpu/cuda upload:: readback::"
timeout 180 .gpu/cuda --ignored upload:: readback:: --test-threads 1 >"$OUT/cuda_tests.log" 2>&1 || echo "   exit $?"
verdict "$OUT/cuda_tests.log"; stamp
source scripts/gpu/bbb720.sh
echo "== prep: Big Buck Bunny at 720p"; prep_bbb720; stamp
train() {  # name steps [env...]
  local name=$1 steps=$2; shift 2
  bbb_train "$name" "$OUT/train_$name.log" cuda "$steps" "$@"
  echo "   $name ($*): exit $?"; grep -E "^timing|^profile|rror|panicked" "$OUT/train_$name.log" | head -4
}
echo "== train, $STEPS steps: page-locked uploads, then from_data, then page-locked again"
train pinned "$STEPS" VSR_PINNED_UPLOAD=1; stamp
train pageable "$STEPS" VSR_PINNED_UPLOAD=0; stamp
if [ "${QUICK:-0}" = 0 ]; then
  train pinned2 "$STEPS" VSR_PINNED_UPLOAD=1; stamp
  echo "== train, 400 steps, page-locked, profiled from 15 s"
  train prof 400 VSR_PINNED_UPLOAD=1 VSR_PROFILE="$OUT/prof_train.txt" VSR_PROFILE_DELAY=15; stamp
fi
echo "== bench step"
timeout 120 $V bench step --backend cuda --precision fp16 --batch 3 --flownet $FLOWNET --iters 30 >"$OUT/bench.log" 2>&1 \
  || echo "   bench: exit $?"
grep -E "^\| cuda|rror|panicked" "$OUT/bench.log" | head -3; stamp
tar -C /tmp/vsr-cache -czf "$OUT/cache.tgz" . 2>/dev/null
(cd "$OUT" && tar -czf logs.tgz --exclude cache.tgz --exclude logs.tgz ./* && find . -type f ! -name '*.tgz' -delete)
