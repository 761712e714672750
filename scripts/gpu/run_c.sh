#!/usr/bin/env bash
# GPU call C: data on 16 cores (prep 720p with PNG frames, the loaders with 2, 4 and 15
# workers), upscale throughput on CUDA, a short real training run on CUDA (fp32, --flownet none).
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh

echo "== data: bundled clips -> 720p (+ PNG frames), loaders with 2, 4, 15 workers"
timeout 150 $V prep all assets/bikes.mp4 assets/bigbuckbunny.mp4 --out /tmp/data --detect --frames --resolution 720p --val-scenes 0 -q >"$OUT/prep.log" 2>&1; tail -n 4 "$OUT/prep.log"
timeout 170 $V bench loaders --data /tmp/data --resolution 720p --batch 3 --frames 3 --crop 512x960 --workers 2,4,15 \
  --json "$OUT/loaders.json" >"$OUT/loaders.log" 2>&1; grep -E "^\||PNG|rror" "$OUT/loaders.log"; stamp

echo "== a short real training run: the bundled clips at 270p (only bigbuckbunny reaches 720p), batch 8, fp32, --flownet none"
timeout 30 $V prep all assets/bikes.mp4 assets/bigbuckbunny.mp4 --out /tmp/data270 --detect --resolution 270p --val-scenes 1 -q >"$OUT/prep270.log" 2>&1
timeout 150 $V train --backend cuda --data /tmp/data270 --resolution 270p --batch 8 --crop 256x448 --val-crop 256x448 --flownet none \
  --precision fp32 --max-steps 100 --min-lr 1e-3 --max-lr 1e-3 --val-every 50 --name gpu_fp32 --runs-dir /tmp/runs >"$OUT/train_fp32.log" 2>&1
grep -E "validation|done|rror|step (1|50|99) " "$OUT/train_fp32.log" | tail -n 6
tar -C /tmp/runs -czf "$OUT/runs.tgz" . ; stamp
echo "== upscale throughput, CUDA fp32"
timeout 200 $V bench upscale --backend cuda --sizes 480x270,960x540 --precision fp32 \
  --json "$OUT/upscale_fp32.json" >"$OUT/upscale_fp32.log" 2>&1; grep -E "^\||rror" "$OUT/upscale_fp32.log"; stamp

