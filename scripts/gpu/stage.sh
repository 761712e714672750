#!/usr/bin/env bash
# Builds the CUDA test binaries and the `vsr` binary with the test build's features (default
# cuda + video, plus wgpu: no Burn rebuild) and stages them, xz'd, in .gpu/ for the device runner
# to carry (`carry: [".gpu"]`), with the minimal FFmpeg libraries they load (the GPU machine has
# none) as .gpu/ffmpeg.txz. On the GPU machine, `source scripts/gpu/env.sh` unpacks both and sets
# LD_LIBRARY_PATH. The runner carries 64 MiB with the tree: the total is checked at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CUDARC_CUDA_VERSION=13000
feat=(--features wgpu)
mapfile -t bins < <(cargo test --workspace "${feat[@]}" --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")!="compiler-artifact" or not m.get("executable"): continue
    t=m["target"]
    if t["name"] in ("parity","cuda") and "test" in t["kind"]: print(t["name"]+"="+m["executable"])
    if t["name"]=="vsr" and "bin" in t["kind"] and not m["profile"]["test"]: print("vsr="+m["executable"])')
((${#bins[@]} == 3)) || { echo "expected the vsr, parity and cuda binaries, got: ${bins[*]}" >&2; exit 1; }
vsr=$(printf '%s\n' "${bins[@]}" | sed -n 's/^vsr=//p')

# FFmpeg (and whatever else vsr needs beyond glibc) into .gpu/ffmpeg/lib; quick when built before.
VSR_BIN=$vsr scripts/gpu/build_ffmpeg.sh
# only this script's files: scripts/gpu/stage_tch.sh stages its own beside them
rm -f .gpu/{vsr,parity,cuda}{,.xz} .gpu/ffmpeg.txz
for b in "${bins[@]}"; do cp "${b#*=}" ".gpu/${b%%=*}"; done
strip .gpu/vsr .gpu/parity .gpu/cuda
missing=$(LD_LIBRARY_PATH=.gpu/ffmpeg/lib ldd .gpu/vsr .gpu/parity .gpu/cuda | grep "not found" || true)
[ -z "$missing" ] || { echo "unresolved libraries: $missing" >&2; exit 1; }
xz -T2 -6 .gpu/vsr .gpu/parity .gpu/cuda
tar -C .gpu/ffmpeg/lib -cf - . | xz -T2 -9 >.gpu/ffmpeg.txz
rm -rf .gpu/ffmpeg  # only the packed copy travels; build_ffmpeg.sh reinstalls it in seconds
ls -la .gpu
tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
staged=$(du -cb .gpu/* | tail -1 | cut -f1)
echo "carried: tree $((tree / 1048576)) MiB + .gpu $((staged / 1048576)) MiB (limit 64 MiB)"
((tree + staged < 64 * 1048576)) || { echo "over the device runner's 64 MiB" >&2; exit 1; }
