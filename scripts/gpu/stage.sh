#!/usr/bin/env bash
# Builds the CUDA test binaries and the `vsr` binary (no FFmpeg: the GPU machine has none) and
# stages them, gzipped, in .gpu/ for the device runner to carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CUDARC_CUDA_VERSION=13000
feat=(--no-default-features --features cuda,wgpu)
cargo build "${feat[@]}" --bin vsr
mapfile -t bins < <(cargo test --workspace "${feat[@]}" --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"] in ("parity","cuda"): print(m["target"]["name"]+"="+m["executable"])')
rm -rf .gpu && mkdir -p .gpu
cp target/debug/vsr .gpu/vsr
for b in "${bins[@]}"; do cp "${b#*=}" ".gpu/${b%%=*}"; done
strip .gpu/*; xz -T2 -6 .gpu/*  # the device runner carries 64 MiB with the tree
ls -la .gpu
