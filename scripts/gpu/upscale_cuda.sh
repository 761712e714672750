#!/usr/bin/env bash
# GPU call for issue 8's CUDA (CubeCL) rows and issue 9's profile: layout_probe.py (PyTorch's
# step NCHW vs channels-last, profiler tables, VSRNet's layers per layout), then
# `vsr bench upscale --backend cuda` per precision and size, each in its own process, sharing
# one kernel cache: a cold run tunes every FlowNetSD/VSRNet shape once; the cache comes back as
# $OUT/cache.tgz (carry it as .gpu/cache.tgz: the next call starts warm). Needs .gpu/vsr-tch.
# UPSCALE_LIMIT: seconds per run (default 200); PROBE=0 skips the probe.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
V=.gpu/vsr-tch
if [ -f .gpu/cache.tgz ] && [ ! -d /tmp/vsr-cache ]; then mkdir -p /tmp/vsr-cache && tar -C /tmp/vsr-cache -xzf .gpu/cache.tgz; fi
du -sh /tmp/vsr-cache 2>/dev/null
pack() { [ -d /tmp/vsr-cache ] && tar -C /tmp/vsr-cache -czf "$OUT/cache.tgz" . && du -h "$OUT/cache.tgz"; }
if [ "${PROBE:-1}" != 0 ]; then
  echo "== layout probe (PyTorch)"
  timeout 200 $PY scripts/gpu/layout_probe.py >"$OUT/probe.log" 2>&1 || echo "   probe: exit $?"
  grep -E "^step|rror" "$OUT/probe.log"; stamp
fi
echo "== vsr bench upscale --backend cuda (cache: $(du -sh /tmp/vsr-cache 2>/dev/null | cut -f1))"
for p in ${PRECISIONS:-fp32 fp16}; do
  for s in ${SIZES:-480x270 960x540}; do
    timeout "${UPSCALE_LIMIT:-200}" $V bench upscale --backend cuda --sizes $s --precision $p \
      --json "$OUT/upscale_cuda_${p}_$s.json" >>"$OUT/upscale_cuda.log" 2>&1 || echo "   upscale $p $s: exit $?"
    grep -E "frames/s \(|rror|panicked" "$OUT/upscale_cuda.log" | tail -2; stamp
    pack >/dev/null
  done
done
pack
