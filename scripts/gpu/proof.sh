#!/usr/bin/env bash
# Issue 7's proof on the GPU machine, and issue 6's loaders on its 16 cores, in one call:
#   1. the bundled Big Buck Bunny clip at 720p, cut in two (assets/bigbuckbunny.cuts: 106 frames
#      train, 26 validate), as `just bundled-720p` prepares it; PNG frames too, for the loaders;
#   2. `vsr bench loaders` on it with 2, 4 and 15 workers;
#   3. run.sh's fp32 run (batch 2, 512x960, cyclic LR 1e-4..1e-3) and the original README's fp16
#      run (batch 7, LR 1e-3), `--flownet none` (quality), LibTorch, each for a fixed time;
#   4. a short fp32 run with the fixture FlowNetSD (speed of the whole model in `vsr train`);
#   5. `vsr plot` of the runs.
# Needs .gpu/vsr-tch (scripts/gpu/stage_tch.sh). Logs, JSON, runs and the plot in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
V=.gpu/vsr-tch
STEPS=${STEPS:-1500}
PRECISE_BN=${PRECISE_BN:-0}   # --precise-bn windows for the quality runs (0: the running averages)
RUNS=${RUNS:-fp32,fp16,flow}  # which runs, in this order
LOADERS=${LOADERS:-1}         # 0: skip the loader benchmark

echo "== prep: Big Buck Bunny at 720p, cut at 4.24 s, + PNG frames"
timeout 120 $V prep all assets/bigbuckbunny.mp4 --cuts assets/bigbuckbunny.cuts --val-scenes 1 --out /tmp/d720 \
  --resolution 720p --frames -q >"$OUT/prep.log" 2>&1 || echo "   prep: exit $?"
tail -n 3 "$OUT/prep.log"; find /tmp/d720/720p/scenes -name '*.mp4' | sort; stamp

if [ "$LOADERS" = 1 ]; then
echo "== loaders, 2/4/15 workers, 30 ms simulated step"
timeout 150 $V bench loaders --data /tmp/d720 --resolution 720p --batch 3 --frames 3 --crop 512x960 --workers 2,4,15 \
  --json "$OUT/loaders.json" >"$OUT/loaders.log" 2>&1 || echo "   loaders: exit $?"
grep -E "^\||rror" "$OUT/loaders.log"; stamp
fi

train() {  # name, time limit, flags...
  local name=$1 lim=$2; shift 2
  timeout -s INT "$lim" $V train --backend tch --data /tmp/d720 --resolution 720p --frames 3 --crop 512x960 \
    --runs-dir /tmp/runs --name "$name" "$@" >"$OUT/train_$name.log" 2>&1; echo "   $name: exit $?"
  grep -E "validation|PSNR|done|rror|stopp|saved" "$OUT/train_$name.log" | tail -n 4
}
pbn=(--precise-bn "$PRECISE_BN")
for r in ${RUNS//,/ }; do case $r in
fp32) echo "== run.sh's run, fp32, --flownet none, --precise-bn $PRECISE_BN"
  train fp32 150 --batch 2 --min-lr 1e-4 --max-lr 1e-3 --precision fp32 --flownet none --max-steps "$STEPS" --val-every 100 --checkpoint-every 500 "${pbn[@]}"; stamp ;;
fp16) echo "== the README's fp16 run, batch 7, --flownet none, --precise-bn $PRECISE_BN"
  train fp16 150 --batch 7 --min-lr 1e-3 --max-lr 1e-3 --precision fp16 --flownet none --max-steps "$STEPS" --val-every 100 --checkpoint-every 500 "${pbn[@]}"; stamp ;;
flow) echo "== fp32 with the fixture FlowNetSD (speed)"
  train flow 60 --batch 2 --min-lr 1e-4 --max-lr 1e-3 --precision fp32 --flownet $FLOWNET --max-steps 300 --val-every 100; stamp ;;
esac; done
runs=$(for r in fp32 fp16; do [ -d /tmp/runs/$r ] && echo /tmp/runs/$r; done)
$V plot $runs -o "$OUT/proof_720p.png" --tags train/loss,val/psnr,train/lr 2>&1 | tail -n 2
rm -rf /tmp/runs/*/checkpoints; tar -C /tmp/runs -czf "$OUT/runs.tgz" .; stamp
