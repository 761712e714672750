#!/usr/bin/env bash
# One GPU call after a change to the training step or the warp bench: `vsr bench step --backend tch`
# at batch 3 (fp32, fp16) beside PyTorch eager (torch_ref.py) in the same call, then
# scripts/gpu/run_w.sh (the warp kernels against Burn's ops and grid_sample), then the 720p fp32
# proof run with precise BN (scripts/gpu/proof.sh). Needs .gpu/vsr-tch (scripts/gpu/stage_tch.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
(
  source scripts/gpu/common.sh
  V=.gpu/vsr-tch
  echo "== vsr bench step, LibTorch, batch 3"
  for p in fp32 fp16; do
    timeout 75 $V bench step --backend tch --precision $p --batch 3 --flownet $FLOWNET --iters 20 \
      --json "$OUT/step_tch_$p.json" >"$OUT/step_tch_$p.log" 2>&1 || echo "   step $p: exit $?"
    grep -E "^\| (tch|FlowNetSD|VSRNet)" "$OUT/step_tch_$p.log"
  done
  echo "== PyTorch eager, batch 3"
  for f in "" --fp16; do
    timeout 100 $PY tests/fixtures/reference/torch_ref.py --batch 3 --frames 3 --h 512 --w 960 --iters 30 $f 2>&1 | tail -1
  done; stamp
)
bash scripts/gpu/run_w.sh
PRECISE_BN=${PRECISE_BN:-64} RUNS=fp32 LOADERS=0 bash scripts/gpu/proof.sh
