#!/usr/bin/env bash
# Builds the LibTorch build (`--features tch`, beside the default cuda + video) of `vsr`, of the
# parity and eval test binaries and of vsr-kernels' tch tests, and stages them, stripped and
# xz'd, in .gpu/ as vsr-tch.xz, parity-tch.xz, eval-tch.xz and kernels-tch.xz, beside what
# scripts/gpu/stage.sh staged (run that one first: it replaces .gpu/ffmpeg.txz; this one only
# adds its own files, and packs the FFmpeg libraries itself when none are staged). LibTorch does
# not travel: the GPU machine has PyTorch 2.11 in /opt/torch/.venv, and scripts/gpu/env.sh puts
# its torch/lib on LD_LIBRARY_PATH (those libraries find their CUDA libraries, nvidia/*/lib,
# through their own RUNPATH).
#
# LIBTORCH: a PyTorch 2.11 installation's `torch` directory (pip's site-packages/torch); default:
# the one `python3 -c 'import torch'` finds. To check the binaries here, the CUDA libraries that
# its libtorch_cuda.so loads must sit beside it as pip installs them (<site-packages>/nvidia/...).
# The device runner carries 64 MiB with the tree: the total is checked at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CUDARC_CUDA_VERSION=13000 LIBTORCH_BYPASS_VERSION_CHECK=1
if [ -z "${LIBTORCH:-}" ]; then
  LIBTORCH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null) \
    || { echo "set LIBTORCH to a PyTorch 2.11 install's torch directory (no python3 torch here)" >&2; exit 1; }
fi
export LIBTORCH
[ -f "$LIBTORCH/lib/libtorch_cuda.so" ] || { echo "$LIBTORCH/lib has no libtorch_cuda.so: a CUDA build of PyTorch is needed" >&2; exit 1; }
site=$(cd "$LIBTORCH/.." && pwd)

mapfile -t bins < <(nice -n "${VSR_NICE:-10}" cargo test --workspace --features tch --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")!="compiler-artifact" or not m.get("executable"): continue
    t=m["target"]
    if t["name"] in ("parity","eval") and "test" in t["kind"]: print(t["name"]+"-tch="+m["executable"])
    if t["name"]=="tch" and "test" in t["kind"]: print("kernels-tch="+m["executable"])
    if t["name"]=="vsr" and "bin" in t["kind"] and not m["profile"]["test"]: print("vsr-tch="+m["executable"])')
((${#bins[@]} == 4)) || { echo "expected the vsr, parity, eval and kernels' tch binaries, got: ${bins[*]}" >&2; exit 1; }
vsr=$(printf '%s\n' "${bins[@]}" | sed -n 's/^vsr-tch=//p')
tchbins=(.gpu/{vsr,parity,eval,kernels}-tch)

mkdir -p .gpu
rm -f .gpu/{vsr,parity,eval,kernels}-tch{,.xz}
for b in "${bins[@]}"; do cp "${b#*=}" ".gpu/${b%%=*}"; done
strip "${tchbins[@]}"
if [ ! -f .gpu/ffmpeg.txz ]; then
  # FFmpeg (and whatever else vsr needs beyond glibc and LibTorch) into .gpu/ffmpeg/lib.
  VSR_BIN=$vsr VSR_EXTERNAL_LIBS=$site scripts/gpu/build_ffmpeg.sh
  tar -C .gpu/ffmpeg/lib -cf - . | xz -T2 -9 >.gpu/ffmpeg.txz
  rm -rf .gpu/ffmpeg
fi
# Everything resolves with the staged FFmpeg and LibTorch's lib directory, and nothing else.
ff=$(mktemp -d) && trap 'rm -rf "$ff"' EXIT
tar -C "$ff" -xJf .gpu/ffmpeg.txz
missing=$(LD_LIBRARY_PATH=$ff:$LIBTORCH/lib ldd "${tchbins[@]}" | grep "not found" || true)
[ -z "$missing" ] || { echo "unresolved libraries: $missing" >&2; exit 1; }
LD_LIBRARY_PATH=$ff:$LIBTORCH/lib ldd .gpu/vsr-tch | awk '$3 ~ /^\// {print "  " $1 " -> " $3}' | grep -E "torch|c10|gomp|ffmpeg|$ff" || true
xz -T2 -6 "${tchbins[@]}"
ls -la .gpu
tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
staged=$(du -cb .gpu/* | tail -1 | cut -f1)
echo "carried: tree $((tree / 1048576)) MiB + .gpu $((staged / 1048576)) MiB (limit 64 MiB)"
((tree + staged < 64 * 1048576)) || { echo "over the device runner's 64 MiB" >&2; exit 1; }
