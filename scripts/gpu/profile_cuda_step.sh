#!/usr/bin/env bash
# Kernel table of one training step of the CUDA (CubeCL + cuDNN) backend: `vsr bench step
# --profile` brackets the timed step with cuProfilerStart/Stop, and Nsight Compute records only
# it (`--profile-from-start off`, one metric, clocks left alone). Sums by kernel name and the
# launch order into $OUT/ncu_summary_<p>.txt (raw CSV as $OUT/ncu_<p>.csv.gz). PRECISIONS
# (default "fp16 fp32"). Under Nsight Compute cuDNN's timing of the fp32 algorithms is perturbed:
# only the fp16 table is the normal run's. Needs .gpu/vsr (scripts/gpu/stage.sh) and .gpu/cache.tgz
# if carried.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/cudnn_env.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for p in ${PRECISIONS:-fp16 fp32}; do
timeout 200 "$NCU" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum --print-units base --csv --log-file "$OUT/ncu_$p.csv" \
  $V bench step --backend cuda --precision $p --batch 3 --flownet $FLOWNET --warmup 1 --iters 1 --profile >"$OUT/ncu_run_$p.log" 2>&1 || echo "   ncu: exit $?"
grep -E "^\| cuda" "$OUT/ncu_run_$p.log"
$PY - "$OUT/ncu_$p.csv" >"$OUT/ncu_summary_$p.txt" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1], errors="replace")) if len(r) > 10]
head = rows[0]; rows = rows[1:]
k, m, v = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value")
tot, cnt = collections.Counter(), collections.Counter()
seq = []
for r in rows:
    if r[m] != "gpu__time_duration.sum": continue
    ns = float(r[v].replace(",", ""))
    name = r[k][:110]
    tot[name] += ns; cnt[name] += 1; seq.append((name, ns))
all_ns = sum(tot.values())
print(f"{len(seq)} kernels, {all_ns/1e6:.2f} ms in all")
for name, ns in tot.most_common(45):
    print(f"{ns/1e6:9.3f} ms {cnt[name]:6d}x  {name}")
print("\n== launch order, runs merged")
runs = []
for name, ns in seq:
    if runs and runs[-1][0] == name: runs[-1][1] += ns; runs[-1][2] += 1
    else: runs.append([name, ns, 1])
for name, ns, c in runs:
    print(f"{ns/1e3:9.1f} us {c:4d}x  {name[:100]}")
PY
head -50 "$OUT/ncu_summary_$p.txt"; gzip -f "$OUT/ncu_$p.csv"; stamp
done
