#!/usr/bin/env bash
# The CUDA backend with its convolutions on cuDNN (kernels/src/cube/cudnn.rs), in one device call:
# the CubeCL CUDA tests (the vendor-convolution check and the training convolution among them),
# then `vsr bench step --backend cuda` fp32 and fp16 at batch 3, then (MODE=full) batch 7 and
# the same steps with VSR_CUDNN=0 for the CubeCL-only figure. With a staged .gpu/parity, the
# models' parity tests on CUDA run after the kernel tests. MODE=ab also runs fp32 and fp16 at
# batch 3 with VSR_CUDA_KERNELS=cudnn (every convolution on cuDNN, none of vsr's own kernels). A
# staged .gpu/vsr-base (an earlier build's vsr, xz'd; kept in target/gpu-base for the next call
# on the same warm machine) runs fp16 and fp32 at batch 3 interleaved with this build's, for an
# A/B on one machine. MODE=pools adds fp16 and fp32 with VSR_CUBECL_POOLS=sliced (CubeCL's
# default pools, which vsr's vendored cubecl-cuda replaces by exclusive pages). Needs .gpu/{vsr,cuda} from
# scripts/gpu/stage.sh; cuDNN from PyTorch's install (libcudnn.so.9 in site-packages/nvidia).
# Carry .gpu/cache.tgz (CubeCL's tuning, from an earlier call's $OUT/cache) to skip re-tuning.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/cudnn_env.sh
echo "cuDNN from $cudnn (cuBLASLt from $cublas)"; ls "$cudnn" | head
row() { grep -E "^\| (cuda|tch|VSRNet|FlowNetSD|warp|degradation)|first step|memory|rror|panicked|note" "$1"; }
step() {  # precision, batch, time limit, log name (environment in $STEP_ENV)
  env ${STEP_ENV:-} timeout "$3" $V bench step --backend cuda --precision "$1" --batch "$2" --flownet $FLOWNET --iters 20 \
    --json "$OUT/$4.json" >"$OUT/$4.log" 2>&1 || echo "   $4: exit $?"
  row "$OUT/$4.log"
}
echo "== CubeCL CUDA tests (cuDNN convolutions)"
timeout 200 .gpu/cuda --ignored --test-threads 1 ${TESTS:-} 2>&1 | tee "$OUT/cuda_tests.log" | grep -E "^test |test result|panicked" | head -60
stamp
if [ -e .gpu/parity ]; then
  echo "== parity with PyTorch's golden outputs on the CUDA backend (TF32, then f32 convolutions)"
  timeout 200 .gpu/parity parity_on_requested_gpu --ignored --test-threads 1 2>&1 | tee "$OUT/parity.log" | grep -E "^test |test result|panicked|max abs" | head -20
  stamp
fi
echo "== vsr bench step --backend cuda (cuDNN)"
step fp32 3 150 step_cuda_fp32_b3; stamp
step fp16 3 150 step_cuda_fp16_b3; stamp
if [ "${MODE:-}" = ab ]; then
  echo "== the same, VSR_CUDA_KERNELS=cudnn"
  STEP_ENV=VSR_CUDA_KERNELS=cudnn step fp32 3 150 step_cudnn_fp32_b3; stamp
  STEP_ENV=VSR_CUDA_KERNELS=cudnn step fp16 3 150 step_cudnn_fp16_b3; stamp
fi
# (an earlier call on the same warm machine may have left it in target/gpu-base: a call that
# carries it keeps a copy there, for a next call that carries the new build only)
if [ -x .gpu/vsr-base ]; then mkdir -p target/gpu-base && cp .gpu/vsr-base target/gpu-base/; fi
if [ -x target/gpu-base/vsr-base ] && [ -x "$V" ]; then
  echo "== target/gpu-base/vsr-base (an earlier build) against this one, interleaved"
  for p in fp16 fp32; do
    V=target/gpu-base/vsr-base step $p 3 150 step_base_${p}_b3; stamp
    step $p 3 150 step_cuda_${p}_b3_again; stamp
  done
fi
if [ "${MODE:-}" = pools ]; then
  echo "== the same, VSR_CUBECL_POOLS=sliced (CubeCL's default pools of sliced pages)"
  STEP_ENV=VSR_CUBECL_POOLS=sliced step fp16 3 150 step_sliced_fp16_b3; stamp
  STEP_ENV=VSR_CUBECL_POOLS=sliced step fp32 3 150 step_sliced_fp32_b3; stamp
fi
if [ "${MODE:-}" = full ]; then
  step fp32 7 100 step_cuda_fp32_b7; stamp
  step fp16 7 100 step_cuda_fp16_b7; stamp
fi
# the cache as one file (the runner returns no deep trees): carry it back as .gpu/cache.tgz
[ -d /tmp/vsr-cache ] && tar -C /tmp/vsr-cache -czf "$OUT/cache.tgz" . && ls -la "$OUT/cache.tgz"
