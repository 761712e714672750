#!/usr/bin/env bash
# Issue 9's side-by-side table on one warm GPU machine, in parts that each fit one 10-minute
# device call (run them back to back on the same machine):
#   scripts/gpu/side_by_side.sh ours   vsr-kernels' LibTorch checks on CUDA (our kernels against
#                                      LibTorch's), FlowNetSD/VSRNet parity on LibTorch's CUDA,
#                                      `vsr bench step --backend tch` fp32/fp16 x batch 3/7 with our
#                                      kernels, and batch 3 with LibTorch's (VSR_TCH_KERNELS=libtorch)
#   scripts/gpu/side_by_side.sh torch  PyTorch 2.11 (tests/fixtures/reference/torch_ref.py): eager
#                                      fp32 and autocast fp16, and torch.compile fp16, batch 3 and 7
#                                      (BATCHES="3": batch 3 only)
#   scripts/gpu/side_by_side.sh layers `vsr bench conv --backend tch` (VSRNet's convolutions pass by
#                                      pass), fp16 and fp32, our kernels and LibTorch's
#   scripts/gpu/side_by_side.sh cuda   `vsr bench step --backend cuda` (CubeCL), fp32 and fp16,
#                                      batch 3, kernel cache empty unless .gpu/cache is carried
#   scripts/gpu/side_by_side.sh both   the CUDA and LibTorch backends of the one LibTorch build
#                                      alternating, fp32 and fp16, batch 3, two rounds (ROUNDS);
#                                      carry .gpu/cache.tgz for CubeCL's kernel cache
# Needs .gpu/vsr-tch, kernels-tch, parity-tch (scripts/gpu/stage_tch.sh). Everything lands in
# $OUT/<part>.log, the JSON of each run in $OUT/<part>.jsonl.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
V=.gpu/vsr-tch
part=${1:?ours, torch, layers, cuda or both}
L=$OUT/$part.log J=$OUT/$part.jsonl
log() { echo "\$ $*" >>"$L"; }
step() {  # backend precision batch limit [env...]
  local be=$1 p=$2 b=$3 lim=$4; shift 4
  log "$* vsr bench step --backend $be --precision $p --batch $b"
  env "$@" timeout "$lim" $V bench step --backend "$be" --precision "$p" --batch "$b" --flownet $FLOWNET --iters 30 \
    --json "$OUT/cur.json" >"$OUT/cur.log" 2>&1 || echo "   step $be $p $b $*: exit $?"
  cat "$OUT/cur.log" >>"$L"; [ -f "$OUT/cur.json" ] && { tr -d '\n' <"$OUT/cur.json"; echo; } >>"$J"; rm -f "$OUT/cur.json"
  echo "-- $be $p batch $b $*"; grep -E "^\| (tch|cuda|FlowNetSD|VSRNet)|rror|panicked" "$OUT/cur.log" | head -5
}
case "$part" in
ours)
  echo "== vsr-kernels' LibTorch checks on CUDA"
  log kernels-tch; VSR_TEST_GPU=tch timeout 180 .gpu/kernels-tch --include-ignored cuda own_ --test-threads 1 --nocapture >"$OUT/cur.log" 2>&1 \
    || echo "   kernels-tch: exit $?"
  cat "$OUT/cur.log" >>"$L"; verdict "$OUT/cur.log"
  echo "== parity on LibTorch's CUDA"
  for t in parity_on_requested_gpu parity_on_requested_gpu_f32_convolutions; do
    log "parity-tch $t"; VSR_TEST_GPU=tch timeout 120 .gpu/parity-tch "$t" --exact --ignored --nocapture >"$OUT/cur.log" 2>&1 || echo "   $t: exit $?"
    cat "$OUT/cur.log" >>"$L"; grep -E "max abs|test result|panicked" "$OUT/cur.log" | head -6
  done; stamp
  echo "== vsr bench step, LibTorch, our kernels"
  for p in fp32 fp16; do for b in 3 7; do step tch $p $b 90; done; done; stamp
  echo "== vsr bench step, LibTorch's kernels only"
  for p in fp32 fp16; do step tch $p 3 90 VSR_TCH_KERNELS=libtorch; done; stamp
  ;;
torch)
  for b in ${BATCHES:-3 7}; do
    for f in "" --fp16 "--fp16 --compile"; do
      log "torch_ref.py --batch $b $f"
      timeout 200 $PY tests/fixtures/reference/torch_ref.py --batch $b --frames 3 --h 512 --w 960 --iters 30 $f \
        >"$OUT/cur.log" 2>&1 || echo "   torch_ref $b $f: exit $?"
      cat "$OUT/cur.log" >>"$L"; tail -1 "$OUT/cur.log" | tee -a "$J"
    done; stamp
  done
  ;;
layers)
  for p in fp16 fp32; do for k in own libtorch; do
    log "VSR_TCH_KERNELS=$k vsr bench conv --backend tch --precision $p"
    VSR_TCH_KERNELS=$k timeout 120 $V bench conv --backend tch --precision $p --batch 3 --skip-burn-wgrad \
      --json "$OUT/cur.json" >"$OUT/cur.log" 2>&1 || echo "   conv $p $k: exit $?"
    cat "$OUT/cur.log" >>"$L"; [ -f "$OUT/cur.json" ] && { tr -d '\n' <"$OUT/cur.json"; echo; } >>"$J"; rm -f "$OUT/cur.json"
    echo "-- $p kernels $k"; grep -E "^\|" "$OUT/cur.log" | head -8
  done; done; stamp
  ;;
cuda)
  for p in fp32 fp16; do step cuda $p 3 280; stamp; done
  save_cache
  ;;
both)
  # cuDNN for the CUDA backend's convolutions (cudnn_env.sh), then the two backends alternating
  source scripts/gpu/cudnn_env.sh
  for r in ${ROUNDS:-1 2}; do for p in fp32 fp16; do for be in cuda tch; do step $be $p 3 150; done; done; done
  stamp
  ;;
esac
rm -f "$OUT/cur.log"
