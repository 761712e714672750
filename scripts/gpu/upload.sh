#!/usr/bin/env bash
# Batches uploaded on a thread of their own vs on the training thread (VSR_UPLOAD_THREAD=0), in
# one call: short LibTorch fp16 training runs (fixture FlowNetSD, batch 3, 512x960, NVDEC, 2
# workers) with vsr's timing line; and a few CubeCL (cuda) steps each way, whose losses must be
# the same (a tensor uploaded on another thread is read on the training thread's stream).
# Needs .gpu/vsr-tch (scripts/gpu/stage_tch.sh). Logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
V=.gpu/vsr-tch
STEPS=${STEPS:-120}
echo "== prep: Big Buck Bunny at 720p"
timeout 120 $V prep all assets/bigbuckbunny.mp4 --cuts assets/bigbuckbunny.cuts --val-scenes 1 --out /tmp/d720 \
  --resolution 720p -q >"$OUT/prep.log" 2>&1 || echo "   prep: exit $?"; stamp
run() {  # name, upload thread 0/1, backend, steps, extra flags
  local name=$1 th=$2 be=$3 steps=$4; shift 4
  VSR_UPLOAD_THREAD=$th timeout -s INT 200 $V train --backend "$be" --data /tmp/d720 --resolution 720p --frames 3 \
    --batch 3 --workers 2 --max-steps "$steps" --val-every 100000 --checkpoint-every 100000 --seed 7 \
    --runs-dir /tmp/runs --name "$name" "$@" >"$OUT/train_$name.log" 2>&1; echo "   $name: exit $?"
  grep -E "rror|^timing|panicked" "$OUT/train_$name.log" | head -3
}
for th in 1 0; do
  echo "== tch fp16, upload thread $th"; run "tch_$th" $th tch "$STEPS" --precision fp16 --crop 512x960 --flownet $FLOWNET; stamp
done
for th in 1 0; do
  echo "== cuda fp32, upload thread $th (losses compared below)"
  run "cuda_$th" $th cuda 12 --precision fp32 --crop 256x448 --flownet none; stamp
done
$V compare /tmp/runs/cuda_1 /tmp/runs/cuda_0 --tags train/loss --tolerance 1e-4 2>&1 | tail -n 8
