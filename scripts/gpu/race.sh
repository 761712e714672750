#!/usr/bin/env bash
# Issue 9's race in one device call, most important first, every result appended to $OUT/race.log
# and $OUT/race.jsonl as it comes (a call cut short keeps what ran):
#   1. LibTorch's upload and read-back checks (kernels-tch own_upload/own_readback);
#   2. real training, 150 steps (fp16, batch 3, 512x960, Big Buck Bunny at 720p, NVDEC, the
#      fixture FlowNetSD): CUDA backend, LibTorch, LibTorch with from_data's uploads
#      (VSR_PINNED_UPLOAD=0);
#   3. `vsr bench step` on both backends and PyTorch 2.11 (torch_ref.py: eager fp32, autocast
#      fp16, torch.compile fp16), batch 3, then batch 7 (BATCHES).
# Needs .gpu/vsr-tch and .gpu/kernels-tch (scripts/gpu/stage_tch.sh); carry .gpu/cache.tgz for
# CubeCL's tuning on this GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/cudnn_env.sh
V=.gpu/vsr-tch L=$OUT/race.log J=$OUT/race.jsonl
say() { echo "$*" | tee -a "$L"; }
say "== kernels-tch own_upload own_readback"
VSR_TEST_GPU=tch timeout 120 .gpu/kernels-tch --include-ignored own_upload own_readback --test-threads 1 >"$OUT/cur.log" 2>&1 \
  || say "   exit $?"
cat "$OUT/cur.log" >>"$L"; verdict "$OUT/cur.log" | tee -a "$L"; stamp
source scripts/gpu/bbb720.sh
prep_bbb720 | tee -a "$L"
train() {  # backend name [env...]
  local be=$1 name=$2; shift 2
  bbb_train "$name" "$OUT/cur.log" "$be" 150 "$@"
  say "-- train $be $* (exit $?)"; grep -E "^timing|^done|rror|panicked" "$OUT/cur.log" | head -4 | tee -a "$L"
}
say "== vsr train, 150 steps"
train cuda cuda; train tch tch; train tch tch_pageable VSR_PINNED_UPLOAD=0; stamp
step() {  # backend precision batch
  timeout 150 $V bench step --backend "$1" --precision "$2" --batch "$3" --flownet $FLOWNET --iters 30 \
    --json "$OUT/cur.json" >"$OUT/cur.log" 2>&1 || say "   step $*: exit $?"
  [ -f "$OUT/cur.json" ] && { tr -d '\n' <"$OUT/cur.json"; echo; } >>"$J"; rm -f "$OUT/cur.json"
  say "-- vsr bench step $*"; grep -E "^\| (tch|cuda)|rror|panicked" "$OUT/cur.log" | head -3 | tee -a "$L"
}
torch() {  # batch flags
  local b=$1; shift
  timeout 200 $PY tests/fixtures/reference/torch_ref.py --batch "$b" --frames 3 --h 512 --w 960 --iters 30 "$@" \
    >"$OUT/cur.log" 2>&1 || say "   torch_ref $b $*: exit $?"
  say "-- torch_ref.py --batch $b $*"; tail -1 "$OUT/cur.log" | tee -a "$L" "$J"
}
for b in ${BATCHES:-3 7}; do
  say "== batch $b"
  for p in fp16 fp32; do step cuda $p "$b"; step tch $p "$b"; done
  torch "$b"; torch "$b" --fp16; torch "$b" --fp16 --compile; stamp
done
rm -f "$OUT/cur.log"
