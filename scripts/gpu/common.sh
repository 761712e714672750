# Sourced by the session-2 GPU scripts: unpacks the staged binaries (env.sh), sets the kernel cache
# (carried between calls in .gpu/cache when the machine was not kept warm), helpers for summaries.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export VSR_REPO_DIR=$PWD VSR_TEST_GPU=cuda VSR_CACHE_DIR=/tmp/vsr-cache
if [ -d .gpu/cache ] && [ ! -d /tmp/vsr-cache ]; then cp -r .gpu/cache /tmp/vsr-cache; fi
V=.gpu/vsr; PY=/opt/torch/.venv/bin/python
FLOWNET=tests/fixtures/flownet_sd.pth.tar.gz
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
verdict() { grep -E "^test .* FAILED$|^test result|panicked at" "$1" | head -${2:-12}; echo "   ($(grep -c ' \.\.\. ok$' "$1") ok)"; }
t0=$SECONDS; stamp() { echo "   [$((SECONDS - t0)) s]"; }
# Keep the tuning results for the next call (a fresh machine starts with an empty cache).
save_cache() { rm -rf "$OUT/cache"; [ -d /tmp/vsr-cache ] && cp -r /tmp/vsr-cache "$OUT/cache"; du -sh "$OUT/cache" 2>/dev/null; }
