#!/usr/bin/env bash
# GPU call for issue 9's LibTorch layout (FlowNetSD in channels-last on CUDA): FlowNetSD's
# parity on LibTorch's CUDA (golden flow2, TF32 and f32), vsr-kernels' LibTorch checks on CUDA,
# `vsr bench step --backend tch` with VSR_TCH_LAYOUT=nchw and auto, fp32 and fp16, batch 3
# (BATCH), PyTorch eager (torch_ref.py) in the same call, and `vsr bench upscale
# --backend tch`. Needs .gpu/vsr-tch, parity-tch, kernels-tch (scripts/gpu/stage_tch.sh; drop
# eval-tch to fit the carry). Every log also lands in $OUT/layout.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
export VSR_TEST_GPU=tch
V=.gpu/vsr-tch
L=$OUT/layout.log
run() { local lim=$1; shift; echo "\$ $*" >>"$L"; timeout "$lim" "$@" >"$OUT/cur.log" 2>&1; local rc=$?; cat "$OUT/cur.log" >>"$L"; return $rc; }
echo "== FlowNetSD parity on LibTorch's CUDA (channels-last), TF32 then f32 convolutions"
for t in parity_on_requested_gpu parity_on_requested_gpu_f32_convolutions; do
  run 120 .gpu/parity-tch "$t" --exact --ignored --nocapture || echo "   $t: exit $?"
  grep -E "max abs|test result|panicked" "$OUT/cur.log" | head -6
done
echo "== vsr-kernels' LibTorch checks on CUDA"
run 120 .gpu/kernels-tch --include-ignored cuda || echo "   kernels-tch: exit $?"
verdict "$OUT/cur.log"
stamp
step() {  # precision batch layout
  VSR_TCH_LAYOUT=$3 run 90 $V bench step --backend tch --precision $1 --batch $2 --flownet $FLOWNET \
    --iters 20 || echo "   step $*: exit $?"
  echo "-- $1 batch $2 layout $3"; grep -E "^\| (tch|FlowNetSD|VSRNet)" "$OUT/cur.log"
}
echo "== vsr bench step, LibTorch"
for p in fp32 fp16; do step $p ${BATCH:-3} nchw; step $p ${BATCH:-3} auto; done; stamp
echo "== PyTorch eager"
for f in "" --fp16; do
  run 100 $PY tests/fixtures/reference/torch_ref.py --batch ${BATCH:-3} --frames 3 --h 512 --w 960 --iters 30 $f
  tail -1 "$OUT/cur.log"
done; stamp
echo "== vsr bench upscale, LibTorch"
for p in fp32 fp16; do
  run 120 $V bench upscale --backend tch --precision $p --sizes 480x270,960x540 --json "$OUT/upscale_tch_$p.json" \
    || echo "   upscale $p: exit $?"
  grep -E "^\| tch" "$OUT/cur.log"
done; stamp
rm -f "$OUT/cur.log"
