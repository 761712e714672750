#!/usr/bin/env bash
# GPU call C: data on 16 cores (prep 720p, the loaders), short real training runs fp32/fp16,
# upscale throughput.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
export VSR_WARP_BACKWARD_KERNEL=${VSR_WARP_BACKWARD_KERNEL:-1}

echo "== data: bundled clips -> 720p (+ PNG frames), loaders with 2, 4, 15 workers"
timeout 150 $V prep all assets/bikes.mp4 assets/bigbuckbunny.mp4 --out /tmp/data --detect --frames --resolution 720p --val-scenes 1 -q >"$OUT/prep.log" 2>&1; tail -4 "$OUT/prep.log"
timeout 150 $V bench loaders --data /tmp/data --resolution 720p --batch 3 --frames 3 --crop 512x960 --workers 2,4,15 \
  --json "$OUT/loaders.json" >"$OUT/loaders.log" 2>&1; grep -E "^\||PNG|rror" "$OUT/loaders.log"; stamp

echo "== short real training runs, 720p, batch 7, fixture FlowNetSD"
for p in fp32 fp16; do
  timeout 120 $V train --data /tmp/data --resolution 720p --batch 7 --crop 512x960 --val-crop 640x1216 --flownet $FLOWNET \
    --precision $p --max-steps 200 --min-lr 1e-3 --max-lr 1e-3 --val-every 100 --name "gpu_$p" --runs-dir /tmp/runs >"$OUT/train_$p.log" 2>&1
  grep -E "val|PSNR|done|rror|steps" "$OUT/train_$p.log" | tail -5
done
tar -C /tmp/runs -czf "$OUT/runs.tgz" . ; stamp

echo "== upscale throughput"
for p in fp32 fp16; do
  timeout 100 $V bench upscale --backend cuda --sizes 480x270,960x540 --precision $p --flownet $FLOWNET \
    --json "$OUT/upscale_$p.json" >"$OUT/upscale_$p.log" 2>&1; grep -E "^\||rror" "$OUT/upscale_$p.log"
done; stamp
save_cache
