#!/usr/bin/env bash
# On a machine with 4 GPUs (issue 10), binaries staged by scripts/gpu/stage.sh or stage_tch.sh
# (carry .gpu; BACKEND=tch for LibTorch):
# data-parallel scaling of ours (`vsr bench step --gpus 1,2,4`, per-GPU batch 3 and 7, fp32 and
# fp16, 512x960, 3 frames, the fixture FlowNetSD) against PyTorch DDP (scripts/torch_ddp_ref.py,
# torchrun) on the same GPUs in the same command, and a short real `vsr train --gpus 2` on the
# bundled clips. Most important first; every step has a time limit and the script skips what
# would not fit in ~9 minutes. Short summary on stdout; logs and JSON in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
export VSR_REPO_DIR=$PWD
BACKEND=${BACKEND:-cuda}  # or tch (needs .gpu/vsr-tch from scripts/gpu/stage_tch.sh)
V=.gpu/vsr; [ -x .gpu/vsr-tch ] && V=.gpu/vsr-tch; PY=/opt/torch/.venv/bin/python; TORCHRUN=/opt/torch/.venv/bin/torchrun
export VSR_CACHE_DIR=/tmp/vsr-cache   # one autotune cache for every invocation (cold: ~2.5 min per new shape set)
FLOW=tests/fixtures/flownet_sd.pth.tar.gz
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader; nproc
t0=$SECONDS; stamp() { echo "   [$((SECONDS - t0)) s]"; }
BUDGET=${BUDGET:-540}  # seconds for the whole script
GPUS=${GPUS:-1,2,4}    # GPU counts to compare (e.g. GPUS=1,2 on a 2-GPU machine)
fits() { (( SECONDS - t0 + $1 <= BUDGET )) || { echo "   skipped (would pass the ${BUDGET} s budget): $2"; return 1; }; }

ours() {  # precision, batch per GPU, time limit
  local p=$1 b=$2 lim=$3
  fits "$lim" "ours $p batch $b" || return 0
  timeout "$lim" $V bench step --backend "$BACKEND" --gpus "$GPUS" --batch "$b" --precision "$p" \
    --crop 512x960 --frames 3 --flownet $FLOW --warmup 5 --iters 20 --json "$OUT/dp_${p}_b${b}.json" \
    >"$OUT/dp_${p}_b${b}.log" 2>&1 || echo "   ours $p batch $b: exit $? (see dp_${p}_b${b}.log)"
  grep -E "^\| (cuda|tch)" "$OUT/dp_${p}_b${b}.log"; grep -iE "error|panicked" "$OUT/dp_${p}_b${b}.log" | head -3
}
torch() {  # precision, batch per GPU
  local p=$1 b=$2 flag=""; [ "$p" = fp16 ] && flag=--fp16
  for n in ${GPUS//,/ }; do
    fits 40 "torch DDP $p batch $b on $n" || return 0
    timeout 90 $TORCHRUN --standalone --nproc-per-node $n scripts/torch_ddp_ref.py --batch "$b" $flag --iters 20 --warmup 6 \
      2>>"$OUT/torch_ddp.err" | tail -1 | tee -a "$OUT/torch_ddp.jsonl"
  done
}

echo "== ours fp32, batch 3 per GPU, 1/2/4 GPUs (cold autotune)"; ours fp32 3 260; stamp
echo "== PyTorch DDP fp32, batch 3 per GPU"; torch fp32 3; stamp

echo "== a real run: bundled clips -> 270p (bikes is below 540 lines), vsr train --gpus 2, global batch 8 (4 per GPU), 100 steps"
if fits 150 "vsr train --gpus 2"; then
  timeout 60 $V prep all assets/bikes.mp4 assets/bigbuckbunny.mp4 --out /tmp/data --detect --resolution 270p --val-scenes 1 \
    >"$OUT/prep.log" 2>&1; tail -2 "$OUT/prep.log"
  timeout 120 $V train --backend "$BACKEND" --gpus 2 --data /tmp/data --resolution 270p --batch 8 \
    --crop 256x448 --val-crop 256x448 --flownet none --max-steps 100 --min-lr 1e-3 --max-lr 1e-3 --val-every 50 --name dp2 \
    --runs-dir /tmp/runs >"$OUT/train_dp2.log" 2>&1 || echo "   train: exit $?"
  grep -E "data-parallel|validation|done|error|step +(1|50|99)\b" "$OUT/train_dp2.log" | tail -6
  tar -C /tmp/runs -czf "$OUT/runs.tgz" . 2>/dev/null
fi; stamp

echo "== two nodes on this machine (two processes, GPUs 0,1 and 2,3, NCCL-free: burn-collective between nodes), 60 steps"
if [ "${NODES:-1}" = 1 ] && [ -d /tmp/data ] && fits 120 "two nodes"; then
  node() {  # rank, GPUs
    CUDA_VISIBLE_DEVICES=$2 timeout 100 $V train --backend "$BACKEND" --gpus 2 --nodes 2 --node-rank "$1" \
      --master-addr 127.0.0.1 --master-port 29611 --node-addr 127.0.0.1 --node-port $((29612 + $1)) \
      --data /tmp/data --resolution 270p --batch 8 --crop 256x448 --val-crop 256x448 --flownet none \
      --max-steps 60 --min-lr 1e-3 --max-lr 1e-3 --val-every 30 --name nodes2 --runs-dir /tmp/runs_node$1 \
      >"$OUT/train_node$1.log" 2>&1; echo "   node $1: exit $?"
  }
  node 0 0,1 & node 1 2,3; wait
  grep -E "data-parallel|node|validation|done|rror|step +(1|30|59)\b" "$OUT/train_node0.log" | tail -6
fi; stamp

echo "== fp16, batch 3 per GPU"; ours fp16 3 200; torch fp16 3; stamp
echo "== batch 7 per GPU"; ours fp32 7 150; ours fp16 7 150; torch fp32 7; torch fp16 7; stamp

echo "== summary (samples/s; efficiency against 1 GPU of the same implementation)"
$PY - "$OUT" <<'EOF'
import json, glob, os, sys
out = sys.argv[1]
rows = []
for f in sorted(glob.glob(os.path.join(out, 'dp_*.json'))):
    r = json.load(open(f))
    for row in r['rows']:
        rows.append(('vsr', r['precision'], r['batch_per_gpu'], row['gpus'], row['median_ms'], row['samples_per_s']))
try:
    for line in open(os.path.join(out, 'torch_ddp.jsonl')):
        if line.startswith('{'):
            r = json.loads(line)
            rows.append(('torch-ddp', 'fp16' if r['fp16'] else 'fp32', r['batch_per_gpu'], r['gpus'], r['ms_per_iter'], r['samples_per_s']))
except FileNotFoundError:
    pass
one = {(i, p, b): s for i, p, b, g, _, s in rows if g == 1}
print('| impl | precision | batch/GPU | GPUs | ms/iter | samples/s | scaling efficiency |')
print('|---|---|---|---|---|---|---|')
for i, p, b, g, ms, s in sorted(rows):
    base = one.get((i, p, b))
    eff = f'{100 * s / (g * base):.1f}%' if base else '-'
    print(f'| {i} | {p} | {b} | {g} | {ms:.2f} | {s:.2f} | {eff} |')
EOF
stamp
