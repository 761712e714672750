#!/usr/bin/env bash
# Where host time goes in `vsr train --backend cuda` against `vsr bench step --backend cuda`
# (issue 9: real training ran 3.6x its bench on an H100). Needs .gpu/vsr built with the `profile`
# feature and symbols kept (`cargo build --features wgpu,profile`, `strip --strip-debug`, xz).
# For each run: its timing line, a sampling CPU profile of every thread (VSR_PROFILE, collapsed
# stacks in $OUT), each thread's CPU seconds over the sampled window (/proc), and the GPU's
# utilisation (nvidia-smi dmon). Data: Big Buck Bunny at 720p, fp16, batch 3, 512x960.
# MODE=train|bench|both (default both); STEPS (default 600), BENCH_ITERS (2500), PLAIN=0 (no
# unprofiled 150-step run first). Don't attach cuda-gdb to a profiled run: it stops at every
# SIGPROF of the sampler, and the run never ends.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/cudnn_env.sh
STEPS=${STEPS:-600}
threads() {  # pid label: every thread's name and CPU seconds (utime + stime)
  local pid=$1 label=$2 hz; hz=$(getconf CLK_TCK)
  for t in /proc/"$pid"/task/*; do
    [ -r "$t/stat" ] || continue
    # comm may hold spaces: fields counted after the closing parenthesis
    awk -v hz="$hz" -v l="$label" -v n="$(cat "$t/comm" 2>/dev/null)" -v tid="${t##*/}" \
      '{ s=$0; sub(/^.*\) /, "", s); split(s, f, " "); printf "%s %s %s %.2f\n", l, tid, n, (f[12]+f[13])/hz }' "$t/stat"
  done
}
watch_run() {  # name delay job: samples /proc at delay and delay+10 s, dmon from delay for 10 s
  local name=$1 delay=$2 job=$3 pid
  sleep "$delay"
  pid=$(pgrep -n -x vsr) || { echo "   $name ended before its window"; wait "$job"; return; }
  threads "$pid" t0 >"$OUT/threads_$name.txt"
  timeout 11 nvidia-smi dmon -s uc -d 1 >"$OUT/dmon_$name.txt" 2>&1 &
  sleep 10
  threads "$pid" t1 >>"$OUT/threads_$name.txt"
  wait "$job"; echo "   $name: exit $?"
  python3 - "$OUT/threads_$name.txt" <<'EOF'
import sys, collections
t = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    label, tid, *name, cpu = line.split()
    t[tid][label] = (" ".join(name), float(cpu))
rows = sorted(((v["t1"][1] - v["t0"][1], v["t1"][0], tid) for tid, v in t.items() if "t0" in v and "t1" in v), reverse=True)
print("   CPU seconds per thread over the 10 s window:", ", ".join(f"{n}({tid}) {d:.2f}" for d, n, tid in rows[:10]))
EOF
  grep -v "^#" "$OUT/dmon_$name.txt" | awk '{ sm += $2; n++ } END { if (n) printf "   GPU sm%% mean over %d s: %.0f\n", n, sm / n }'
}
source scripts/gpu/bbb720.sh
echo "== prep: Big Buck Bunny at 720p"; prep_bbb720; stamp
train() {  # name steps [env...]
  local name=$1 steps=$2; shift 2
  bbb_train "$name" "$OUT/train_$name.log" cuda "$steps" "$@"
}
if [ "${MODE:-both}" != bench ]; then
  if [ "${PLAIN:-1}" = 1 ]; then
    echo "== train, cuda fp16, 150 steps (session 18's run: 46.3 ms)"
    train plain 150; echo "   exit $?"; grep -E "^timing|rror|panicked" "$OUT/train_plain.log" | head -4; stamp
  fi
  echo "== train, cuda fp16, $STEPS steps, profiled from 20 s"
  train prof "$STEPS" VSR_PROFILE="$OUT/prof_train.txt" VSR_PROFILE_DELAY=20 &
  watch_run train 20 $!; grep -E "^timing|^profile|rror|panicked" "$OUT/train_prof.log" | head -4; stamp
fi
if [ "${MODE:-both}" != train ]; then
  echo "== bench step, cuda fp16, ${BENCH_ITERS:-2500} iters, profiled from 20 s"
  VSR_PROFILE="$OUT/prof_bench.txt" VSR_PROFILE_DELAY=20 timeout 240 $V bench step --backend cuda --precision fp16 \
    --batch 3 --flownet $FLOWNET --iters "${BENCH_ITERS:-2500}" --json "$OUT/bench.json" >"$OUT/bench.log" 2>&1 &
  watch_run bench 20 $!; grep -E "^\| cuda|^profile|rror|panicked" "$OUT/bench.log" | head -4; stamp
fi
# at most 8 files come back: the logs in one archive, CubeCL's cache (this GPU's tuning) in another
tar -C /tmp/vsr-cache -czf "$OUT/cache.tgz" . 2>/dev/null
(cd "$OUT" && tar -czf logs.tgz --exclude cache.tgz --exclude logs.tgz ./* && find . -type f ! -name '*.tgz' -delete)
