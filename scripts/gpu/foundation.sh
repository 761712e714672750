#!/usr/bin/env bash
# On the GPU machine: CUDA parity (models, warp kernels) of the staged binaries. Logs to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
export VSR_REPO_DIR=$PWD VSR_TEST_GPU=cuda RUST_BACKTRACE=1
source scripts/gpu/env.sh  # unpacks .gpu/, LD_LIBRARY_PATH to its FFmpeg
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
.gpu/vsr info
.gpu/parity --include-ignored --nocapture --test-threads 1 2>&1 | tee "$OUT/parity.log" | grep -E "max abs|test |result"
.gpu/cuda --ignored --test-threads 1 2>&1 | tee "$OUT/cuda_kernels.log" | grep -E "^test |result|panicked"
