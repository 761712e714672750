# Sourced by the CUDA-backend device scripts (cudnn.sh, profile_cuda_step.sh): CubeCL's kernel
# cache from a carried .gpu/cache.tgz, common.sh, and cuDNN 9 (with the cuBLASLt it loads) from
# PyTorch's install on the library path; sets $cudnn and $cublas to their folders.
if [ -f .gpu/cache.tgz ] && [ ! -d /tmp/vsr-cache ]; then mkdir -p /tmp/vsr-cache && tar -C /tmp/vsr-cache -xzf .gpu/cache.tgz; fi
source scripts/gpu/common.sh
cudnn=$(dirname "$(find /opt/torch/.venv -name 'libcudnn.so.9' | head -1)")
cublas=$(dirname "$(find /opt/torch/.venv -name 'libcublasLt.so*' | head -1)")
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$cudnn:$cublas
