#!/usr/bin/env bash
# Kernel-level profile of `vsr bench step --backend tch` (issue 9's "profile first"): Nsight
# Compute records every CUDA kernel's duration (one metric, clocks left alone), then the kernels
# are summed by name into $OUT/ncu_summary.txt (top 40; the raw CSV as $OUT/ncu.csv.gz). The
# run is one warm-up step and one timed step plus the per-stage timings (3 each), so the summary
# mixes them; the kernel names tell the layers apart. PRECISION (fp16), BATCH (3), LIMIT (s),
# BACKEND (tch; cuda: CubeCL, whose Adam is not one kernel, so "one step" is not cut out).
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu on this machine"; exit 0; }
timeout "${LIMIT:-200}" "$NCU" --clock-control none --metrics gpu__time_duration.sum --print-units base --csv --log-file "$OUT/ncu.csv" \
  .gpu/vsr-tch bench step --backend "${BACKEND:-tch}" --precision "${PRECISION:-fp16}" --batch "${BATCH:-3}" --flownet "$FLOWNET" \
  --warmup 1 --iters 1 >"$OUT/ncu_run.log" 2>&1 || echo "   ncu: exit $?"
$PY - "$OUT/ncu.csv" >"$OUT/ncu_summary.txt" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1], errors="replace")) if len(r) > 10]
head = rows[0]; rows = rows[1:]
k, m, v = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value")
tot, cnt = collections.Counter(), collections.Counter()
for r in rows:
    if r[m] != "gpu__time_duration.sum": continue
    ns = float(r[v].replace(",", ""))
    name = r[k][:110]
    tot[name] += ns; cnt[name] += 1
all_ns = sum(tot.values())
print(f"{len(rows)} kernels, {all_ns/1e6:.1f} ms in all")
for name, ns in tot.most_common(40):
    print(f"{ns/1e6:9.2f} ms {cnt[name]:6d}x  {name}")
# One training step alone: the kernels after the warm-up step's Adam updates up to the end of the
# timed step's (each step ends with one adam_f32 per parameter), in launch order, runs of one
# kernel merged.
seq = [(r[k], float(r[v].replace(",", ""))) for r in rows if r[m] == "gpu__time_duration.sum"]
ends = [i for i in range(len(seq)) if seq[i][0].startswith("adam_f32") and (i + 1 == len(seq) or not seq[i + 1][0].startswith("adam_f32"))]
if len(ends) >= 2:
    step = seq[ends[0] + 1:ends[1] + 1]
    print(f"\n== one step: {len(step)} kernels, {sum(ns for _, ns in step)/1e6:.2f} ms (launch order, runs merged)")
    runs = []
    for name, ns in step:
        if runs and runs[-1][0] == name: runs[-1][1] += ns; runs[-1][2] += 1
        else: runs.append([name, ns, 1])
    for name, ns, c in runs:
        print(f"{ns/1e3:9.1f} us {c:4d}x  {name[:100]}")
PY
head -25 "$OUT/ncu_summary.txt"
gzip -f "$OUT/ncu.csv"
