#!/usr/bin/env bash
# The CUDA backend's batch uploads through page-locked memory (vsr_kernels::upload) against
# `from_data` (VSR_PINNED_UPLOAD=0), in one call: the upload checks of .gpu/cuda, then
# `vsr train --backend cuda` both ways (fp16, batch 3, 512x960, Big Buck Bunny at 720p, NVDEC, the
# fixture FlowNetSD), then a profiled run with page-locked uploads (VSR_PROFILE, when .gpu/vsr has
# the `profile` feature) and `vsr bench step` for the same step on device-resident input.
# Needs .gpu/vsr and .gpu/cuda (scripts/gpu/stage.sh). Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/cudnn_env.sh
STEPS=${STEPS:-150}
echo "== .gpu/cuda upload:: readback::"
timeout 180 .gpu/cuda --ignored upload:: readback:: --test-threads 1 >"$OUT/cuda_tests.log" 2>&1 || echo "   exit $?"
verdict "$OUT/cuda_tests.log"; stamp
echo "== prep: Big Buck Bunny at 720p"
timeout 150 $V prep all assets/bigbuckbunny.mp4 --cuts assets/bigbuckbunny.cuts --val-scenes 1 --out /tmp/d720 \
  --resolution 720p -q >"$OUT/prep.log" 2>&1 || echo "   prep: exit $?"; stamp
train() {  # name steps [env...]
  local name=$1 steps=$2; shift 2
  env "$@" timeout -s INT 200 $V train --backend cuda --data /tmp/d720 --resolution 720p --frames 3 --batch 3 \
    --crop 512x960 --workers 2 --precision fp16 --flownet $FLOWNET --max-steps "$steps" --val-every 100000 \
    --checkpoint-every 100000 --seed 7 --runs-dir /tmp/runs --name "$name" >"$OUT/train_$name.log" 2>&1
  echo "   $name ($*): exit $?"; grep -E "^timing|^profile|rror|panicked" "$OUT/train_$name.log" | head -4
}
echo "== train, $STEPS steps: page-locked uploads, then from_data, then page-locked again"
train pinned "$STEPS" VSR_PINNED_UPLOAD=1; stamp
train pageable "$STEPS" VSR_PINNED_UPLOAD=0; stamp
train pinned2 "$STEPS" VSR_PINNED_UPLOAD=1; stamp
echo "== train, 400 steps, page-locked, profiled from 15 s"
train prof 400 VSR_PINNED_UPLOAD=1 VSR_PROFILE="$OUT/prof_train.txt" VSR_PROFILE_DELAY=15; stamp
echo "== bench step"
timeout 120 $V bench step --backend cuda --precision fp16 --batch 3 --flownet $FLOWNET --iters 30 >"$OUT/bench.log" 2>&1 \
  || echo "   bench: exit $?"
grep -E "^\| cuda|rror|panicked" "$OUT/bench.log" | head -3; stamp
tar -C /tmp/vsr-cache -czf "$OUT/cache.tgz" . 2>/dev/null
(cd "$OUT" && tar -czf logs.tgz --exclude cache.tgz --exclude logs.tgz ./* && find . -type f ! -name '*.tgz' -delete)
