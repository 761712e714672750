#!/usr/bin/env bash
# GPU call for issue 9's kernels of our own on LibTorch (kernels/src/nvrtc.rs: BatchNorm +
# LeakyReLU, one-output-channel convolutions): vsr-kernels' LibTorch checks on CUDA (the own_*
# comparisons with LibTorch's kernels among them), then `vsr bench step --backend tch` with
# VSR_TCH_KERNELS=libtorch and own, fp32 and fp16, batch 3 (BATCH), PyTorch eager (torch_ref.py)
# in the same call, and two short fp16 training runs on 720p Big Buck Bunny (own, libtorch)
# whose losses are compared. Needs .gpu/vsr-tch, kernels-tch (scripts/gpu/stage_tch.sh). PARTS
# (tests,step,torch,train) picks parts. Logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
export VSR_TEST_GPU=tch
V=.gpu/vsr-tch
L=$OUT/tch_kernels.log
PARTS=${PARTS:-tests,step,torch,train}
has() { [[ ",$PARTS," == *",$1,"* ]]; }
run() { local lim=$1; shift; echo "\$ $*" >>"$L"; timeout "$lim" "$@" >"$OUT/cur.log" 2>&1; local rc=$?; cat "$OUT/cur.log" >>"$L"; return $rc; }
if has tests; then
  echo "== vsr-kernels' LibTorch checks on CUDA"
  run 180 .gpu/kernels-tch --include-ignored cuda own_ --nocapture --test-threads 1 || echo "   kernels-tch: exit $?"
  verdict "$OUT/cur.log"; grep -E "max diff" "$OUT/cur.log" | head -40; stamp
fi
step() {  # precision batch kernels
  VSR_TCH_KERNELS=$3 run 120 $V bench step --backend tch --precision $1 --batch $2 --flownet $FLOWNET \
    --iters 30 --json "$OUT/step_$1_$2_$3.json" || echo "   step $*: exit $?"
  echo "-- $1 batch $2 kernels $3"; grep -E "^\| (tch|FlowNetSD|VSRNet)|peak|first" "$OUT/cur.log" | head -8
}
if has step; then
  echo "== vsr bench step, LibTorch"
  for p in fp32 fp16; do step $p ${BATCH:-3} libtorch; step $p ${BATCH:-3} own; done; stamp
fi
if has torch; then
  echo "== PyTorch eager"
  for f in "" --fp16; do
    run 100 $PY tests/fixtures/reference/torch_ref.py --batch ${BATCH:-3} --frames 3 --h 512 --w 960 --iters 30 $f
    tail -1 "$OUT/cur.log"
  done; stamp
fi
if has train; then
  echo "== prep: Big Buck Bunny at 720p"
  timeout 120 $V prep all assets/bigbuckbunny.mp4 --cuts assets/bigbuckbunny.cuts --val-scenes 1 --out /tmp/d720 \
    --resolution 720p -q >"$OUT/prep.log" 2>&1 || echo "   prep: exit $?"; stamp
  for k in own libtorch; do
    echo "== tch fp16 training, kernels $k"
    VSR_TCH_KERNELS=$k timeout -s INT 200 $V train --backend tch --data /tmp/d720 --resolution 720p --frames 3 \
      --batch 3 --workers 2 --max-steps ${STEPS:-150} --val-every 75 --checkpoint-every 100000 --seed 7 \
      --runs-dir /tmp/runs --name "k_$k" --precision fp16 --crop 512x960 --flownet $FLOWNET >"$OUT/train_$k.log" 2>&1
    echo "   exit $?"; grep -E "rror|^timing|panicked|PSNR|psnr" "$OUT/train_$k.log" | tail -4; stamp
  done
  $V compare /tmp/runs/k_own /tmp/runs/k_libtorch --tolerance 5e-2 2>&1 | tail -n 14
fi
rm -f "$OUT/cur.log"
