#!/usr/bin/env bash
# GPU call B: the training step fp16 (empty cache, then warm) and batch 7, beside PyTorch's
# reference (eager, autocast, torch.compile) on the same GPU in the same command.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
export VSR_WARP_BACKWARD_KERNEL=${VSR_WARP_BACKWARD_KERNEL:-1}

echo "== training step fp16, batch 3: empty fp16 tuning (fp32's kept), then warm"
timeout 300 $V bench step --backend cuda --precision fp16 --flownet $FLOWNET --iters 10 \
  --json "$OUT/step_fp16_cold.json" >"$OUT/step_fp16_cold.log" 2>&1; grep -E "^\||rror" "$OUT/step_fp16_cold.log"; stamp
for p in fp16 fp32; do
  timeout 100 $V bench step --backend cuda --precision $p --flownet $FLOWNET --iters 30 \
    --json "$OUT/step_${p}_b3.json" >"$OUT/step_${p}_b3.log" 2>&1; grep -E "^\| cuda|rror" "$OUT/step_${p}_b3.log"
done; stamp
save_cache
echo "== PyTorch reference, batch 3 and 7"
for b in 3 7; do
  for a in "" "--fp16" "--fp16 --compile"; do
    timeout 150 $PY tests/fixtures/reference/torch_ref.py --batch $b --frames 3 --h 512 --w 960 --iters 30 $a 2>&1 | tail -1 | tee -a "$OUT/torch_ref.jsonl"
  done
done; stamp
echo "== ours, batch 7"
for p in fp32 fp16; do
  timeout 150 $V bench step --backend cuda --precision $p --batch 7 --flownet $FLOWNET --iters 20 \
    --json "$OUT/step_${p}_b7.json" >"$OUT/step_${p}_b7.log" 2>&1; grep -E "^\| cuda|rror" "$OUT/step_${p}_b7.log"
done; stamp
save_cache
