#!/usr/bin/env bash
# GPU call K (carries cuda, parity; no vsr: the carry limit): which warp kernel test hangs or fails
# with the backward kernels forced, and parity with TF32 convolutions and the default backward.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
echo "== warp kernels on CUDA, backward kernels forced, one test at a time (log as it goes)"
VSR_WARP_BACKWARD_KERNEL=1 timeout 120 .gpu/cuda --ignored --test-threads 1 2>&1 | tee "$OUT/cuda_kernels.log" | grep -vE "^\s*$" | tail -40; stamp
echo "== parity, TF32 autotuned convolutions, default warp backward"
timeout 240 .gpu/parity parity_on_requested_gpu --exact --ignored --nocapture 2>&1 | tee "$OUT/parity_tf32.log" | grep -E "max abs|^test result|panicked|running for"; stamp
save_cache
