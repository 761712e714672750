#!/usr/bin/env bash
# GPU call T (carries vsr, vsr-tch): the training step after the tap-product weight gradient,
# LibTorch and CUDA, fp32 and fp16, beside PyTorch's reference on the same GPU in the same command.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
export VSR_WARP_BACKWARD_KERNEL=1
row() { grep -E "^\| (cuda|tch)|^\| VSRNet|^\| FlowNetSD|rror|panicked" "$1"; }
echo "== PyTorch reference, batch 3"
for a in "" "--fp16" "--fp16 --compile"; do
  timeout 90 $PY tests/fixtures/reference/torch_ref.py --batch 3 --frames 3 --h 512 --w 960 --iters 30 $a 2>&1 | tail -1 | tee -a "$OUT/torch_ref.jsonl"
done; stamp
echo "== ours on LibTorch"
for p in fp32 fp16; do for b in 3 7; do
  timeout 60 .gpu/vsr-tch bench step --backend tch --precision $p --batch $b --flownet $FLOWNET --iters 20 \
    --json "$OUT/step_tch_${p}_b$b.json" >"$OUT/step_tch_${p}_b$b.log" 2>&1; row "$OUT/step_tch_${p}_b$b.log"
done; done; stamp
echo "== ours on CUDA (CubeCL), cold then warm"
for p in fp32 fp16; do
  timeout 170 $V bench step --backend cuda --precision $p --flownet $FLOWNET --iters 5 \
    --json "$OUT/step_cuda_${p}_cold.json" >"$OUT/step_cuda_${p}_cold.log" 2>&1; row "$OUT/step_cuda_${p}_cold.log"
  timeout 60 $V bench step --backend cuda --precision $p --flownet $FLOWNET --iters 20 \
    --json "$OUT/step_cuda_${p}.json" >"$OUT/step_cuda_${p}.log" 2>&1; row "$OUT/step_cuda_${p}.log"; stamp
done
echo "== warp: our kernels (deterministic; atomic) against Burn's tensor ops, and PyTorch's grid_sample"
for p in fp32 fp16; do
  timeout 40 $V bench warp --backend cuda --precision $p --json "$OUT/warp_$p.json" 2>&1 | grep -E "^\| [0-9]"
done
VSR_WARP_ATOMIC=1 timeout 40 $V bench warp --backend cuda --json "$OUT/warp_fp32_atomic.json" 2>&1 | grep -E "^\| [0-9]"
timeout 40 $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 2>&1 | tail -3; stamp
