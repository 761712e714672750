# Sourced by GPU-side scripts (`source scripts/gpu/env.sh`): unpacks what scripts/gpu/stage.sh
# and stage_tch.sh staged in .gpu/ (xz'd binaries, the minimal FFmpeg libraries in ffmpeg.txz)
# and points the dynamic loader at those libraries, so that .gpu/vsr and the test binaries run on
# a machine without FFmpeg. Works without the xz program (Python's lzma instead). Rerunning is harmless.
_vsr_gpu=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.gpu
for _f in "$_vsr_gpu"/*.xz; do
  [ -e "$_f" ] || continue
  xz -d -f "$_f" 2>/dev/null \
    || python3 -c 'import lzma,os,sys; f=sys.argv[1]; open(f[:-3],"wb").write(lzma.open(f).read()); os.remove(f)' "$_f"
  chmod +x "${_f%.xz}"
done
if [ -f "$_vsr_gpu/ffmpeg.txz" ]; then
  rm -rf "$_vsr_gpu/ffmpeg" && mkdir -p "$_vsr_gpu/ffmpeg/lib"
  tar -C "$_vsr_gpu/ffmpeg/lib" -xJf "$_vsr_gpu/ffmpeg.txz" 2>/dev/null \
    || python3 -c 'import sys,tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$_vsr_gpu/ffmpeg.txz" "$_vsr_gpu/ffmpeg/lib"
  rm -f "$_vsr_gpu/ffmpeg.txz"
fi
export LD_LIBRARY_PATH=$_vsr_gpu/ffmpeg/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# LibTorch builds (scripts/gpu/stage_tch.sh: vsr-tch, parity-tch, ...) load PyTorch's libraries
# from this machine's install: VSR_TORCH_LIB, else /opt/torch/.venv's, else python3's torch. Its
# libraries find their CUDA libraries (site-packages/nvidia/*/lib) through their own RUNPATH.
if compgen -G "$_vsr_gpu/*-tch" >/dev/null; then
  _torch=${VSR_TORCH_LIB:-/opt/torch/.venv/lib/python3.12/site-packages/torch/lib}
  [ -f "$_torch/libtorch_cpu.so" ] \
    || _torch=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)
  if [ -n "$_torch" ] && [ -f "$_torch/libtorch_cpu.so" ]; then
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$_torch
  else
    echo "env.sh: no PyTorch libraries for the LibTorch binaries (set VSR_TORCH_LIB to torch/lib)" >&2
  fi
fi
for _f in "$_vsr_gpu"/*; do
  [ -f "$_f" ] && [ -x "$_f" ] || continue
  _missing=$(ldd "$_f" 2>/dev/null | grep "not found")
  [ -z "$_missing" ] || echo "env.sh: $(basename "$_f") lacks libraries:$(echo "$_missing" | awk '{printf " %s", $1}')" >&2
done
unset _f _vsr_gpu _missing _torch
