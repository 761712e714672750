#!/usr/bin/env bash
# On the GPU machine: FlowNetSD cold/warm forward, warp kernel vs Burn ops vs PyTorch.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh  # unpacks .gpu/, LD_LIBRARY_PATH to its FFmpeg
V=.gpu/vsr; PY=/opt/torch/.venv/bin/python
rm -rf ~/.cache/cubecl
echo "== flownet cold (empty kernel cache)"; $V bench flownet --backend cuda --size 512x960 --flownet tests/fixtures/flownet_sd.pth.tar.gz --iters 20 --json "$OUT/flownet_cold.json" | head -3
echo "== flownet warm cache (new process)"; $V bench flownet --backend cuda --size 512x960 --flownet tests/fixtures/flownet_sd.pth.tar.gz --iters 20 --json "$OUT/flownet_warm.json" | head -3
echo "== warp fp32"; $V bench warp --backend cuda --json "$OUT/warp_fp32.json" | head -5
echo "== warp fp32 atomic grad_img"; VSR_WARP_ATOMIC=1 $V bench warp --backend cuda --json "$OUT/warp_fp32_atomic.json" | head -5
echo "== warp fp16"; $V bench warp --backend cuda --precision fp16 --json "$OUT/warp_fp16.json" | head -5
echo "== pytorch grid_sample"; $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280; $PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 --fp16
