#!/usr/bin/env bash
# Issue 9's speed race on one GPU, in parts that each fit one 10-minute device call:
#   scripts/gpu/speed.sh tch    LibTorch: training-convolution tests, `vsr bench conv`, `vsr bench
#                               step` fp32/fp16 x batch 3/7; PyTorch's reference at batch 3
#   scripts/gpu/speed.sh cuda   CubeCL: `vsr bench conv` (cold autotune), `vsr bench step` with
#                               the tap-product (fp32, fp16) and Burn's weight gradient (fp32);
#                               PyTorch at batch 7
# Needs .gpu/vsr-tch (+ kernels-tch) from scripts/gpu/stage_tch.sh: that binary has both
# backends. Logs and JSON in $OUT; the autotune cache is saved to $OUT/cache (copy it to
# .gpu/cache to carry it into the next call).
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
V=.gpu/vsr-tch
row() { grep -E "^\| (cuda|tch|VSRNet|FlowNetSD|warp|degradation)|rror|panicked" "$1"; }
torch_ref() {  # batch, extra flags...
  local b=$1; shift
  timeout 150 $PY tests/fixtures/reference/torch_ref.py --batch "$b" --frames 3 --h 512 --w 960 --iters 30 "$@" 2>&1 \
    | tail -1 | tee -a "$OUT/torch_ref.jsonl"
}
step() {  # backend, precision, batch, time limit, log name
  timeout "$4" $V bench step --backend "$1" --precision "$2" --batch "$3" --flownet $FLOWNET --iters 20 \
    --json "$OUT/$5.json" >"$OUT/$5.log" 2>&1 || echo "   $5: exit $?"
  row "$OUT/$5.log"
}
conv() {  # backend, precision, time limit, extra flags...
  local b=$1 p=$2 lim=$3; shift 3
  timeout "$lim" $V bench conv --backend "$b" --precision "$p" --iters 5 --json "$OUT/conv_${b}_$p.json" "$@" \
    >"$OUT/conv_${b}_$p.log" 2>&1 || echo "   conv $b $p: exit $?"
  grep -E "^\||rror|panicked" "$OUT/conv_${b}_$p.log"
}
case "${1:-}" in
tch)
  echo "== training convolution on LibTorch (its own graph) against Burn's on the CPU"
  VSR_TEST_GPU=tch .gpu/kernels-tch conv batch_norm --include-ignored 2>&1 | tee "$OUT/kernels_tch.log" | grep -E "^test |test result|panicked"
  echo "== vsr bench conv, LibTorch"
  conv tch fp32 90; conv tch fp16 90; stamp
  echo "== vsr bench step, LibTorch"
  for p in fp32 fp16; do for b in 3 7; do step tch $p $b 75 "step_tch_${p}_b$b"; done; done; stamp
  echo "== PyTorch reference, batch 3 (eager fp32, autocast fp16, compiled fp16)"
  torch_ref 3; torch_ref 3 --fp16; torch_ref 3 --fp16 --compile; stamp
  ;;
cuda)
  echo "== vsr bench conv, CUDA (CubeCL autotune, cold unless .gpu/cache)"
  conv cuda fp32 240; stamp
  echo "== vsr bench step, CUDA: the tap-product weight gradient, then Burn's"
  VSR_WGRAD=taps step cuda fp32 3 150 step_cuda_fp32_b3_taps; stamp
  VSR_WGRAD=taps step cuda fp16 3 150 step_cuda_fp16_b3_taps; stamp
  step cuda fp32 3 100 step_cuda_fp32_b3_burn; stamp
  save_cache
  echo "== PyTorch reference, batch 7 (eager fp32, autocast fp16, compiled fp16)"
  torch_ref 7; torch_ref 7 --fp16; torch_ref 7 --fp16 --compile; stamp
  ;;
*) echo "usage: $0 tch|cuda" >&2; exit 2 ;;
esac
