#!/usr/bin/env bash
# On the GPU machine, with binaries staged by scripts/gpu/stage.sh (carry .gpu): session 2, first
# run. Everything that needs the GPU in one command: warp backward on CUDA, parity, the training
# step against PyTorch (same GPU, same command), the loaders on 16 cores, a short real training
# run. Short summary on stdout; logs and JSON in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
export VSR_REPO_DIR=$PWD VSR_TEST_GPU=cuda VSR_CACHE_DIR=/tmp/vsr-cache
V=.gpu/vsr; PY=/opt/torch/.venv/bin/python
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
verdict() { grep -E "^test .* FAILED$|^test result|panicked at" "$1" | head -${2:-12}; echo "   ($(grep -c ' \.\.\. ok$' "$1") ok)"; }
t0=$SECONDS; stamp() { echo "   [$((SECONDS - t0)) s]"; }

echo "== warp kernels on CUDA (backward kernels forced), pass check"
VSR_WARP_BACKWARD_KERNEL=1 .gpu/cuda --ignored --test-threads 1 >"$OUT/cuda_kernels.log" 2>&1; verdict "$OUT/cuda_kernels.log"; stamp

echo "== parity vs PyTorch: TF32 autotuned convs, and f32-only convs"
VSR_WARP_BACKWARD_KERNEL=1 .gpu/parity parity_on_requested_gpu --exact --ignored --nocapture >"$OUT/parity_tf32.log" 2>&1
grep -E "max abs|^test result|panicked" "$OUT/parity_tf32.log"
.gpu/parity parity_on_requested_gpu_f32_convolutions --exact --ignored --nocapture >"$OUT/parity_f32.log" 2>&1
grep -E "max abs|^test result|panicked" "$OUT/parity_f32.log"; stamp

echo "== warp bench (kernel backward)"
VSR_WARP_BACKWARD_KERNEL=1 $V bench warp --backend cuda --json "$OUT/warp_fp32.json" 2>/dev/null | head -4
VSR_WARP_BACKWARD_KERNEL=1 VSR_WARP_ATOMIC=1 $V bench warp --backend cuda --json "$OUT/warp_fp32_atomic.json" 2>/dev/null | sed -n 3,4p
$PY scripts/torch_warp_bench.py 6x1x512x960 14x1x720x1280 2>&1 | tail -3; stamp

echo "== training step: ours (cold cache, then warm) and PyTorch's, batch 3, 512x960"
for p in fp32 fp16; do
  rm -rf /tmp/vsr-cache
  $V bench step --backend cuda --precision $p --iters 20 --json "$OUT/step_${p}_cold.json" >"$OUT/step_${p}_cold.log" 2>&1
  $V bench step --backend cuda --precision $p --iters 30 --json "$OUT/step_${p}.json" >"$OUT/step_${p}.log" 2>&1
  grep -E "^\| cuda" "$OUT/step_${p}_cold.log" "$OUT/step_${p}.log"; grep -E "^\| [A-Z]" "$OUT/step_${p}.log"
  tail -2 "$OUT/step_${p}.log" | grep -i error
done
for a in "" "--fp16" "--fp16 --compile"; do
  $PY tests/fixtures/reference/torch_ref.py --batch 3 --frames 3 --h 512 --w 960 $a 2>&1 | tail -1 | tee -a "$OUT/torch_ref.jsonl"
done; stamp

echo "== data: bundled clips -> 720p, loaders on 16 cores"
$V prep all assets/bikes.mp4 assets/bigbuckbunny.mp4 --out /tmp/data --detect --frames --resolution 720p >"$OUT/prep.log" 2>&1; tail -3 "$OUT/prep.log"
$V bench loaders --data /tmp/data --resolution 720p --batch 3 --frames 3 --crop 512x960 --workers 2,4,15 \
  --json "$OUT/loaders.json" >"$OUT/loaders.log" 2>&1; grep -E "^\||PNG frames" "$OUT/loaders.log"; stamp

echo "== a short real training run, 720p, --flownet none (quality) then fixture FlowNetSD (speed)"
for p in fp32 fp16; do
  timeout 240 $V train --data /tmp/data --resolution 720p --batch 7 --crop 512x960 --flownet none --precision $p \
    --max-steps 300 --min-lr 1e-3 --max-lr 1e-3 --val-every 100 --name "gpu_$p" --runs-dir /tmp/runs >"$OUT/train_$p.log" 2>&1
  grep -E "validation|done|error" "$OUT/train_$p.log" | tail -4
done
tar -C /tmp/runs -czf "$OUT/runs.tgz" . ; stamp
