# vsr: common tasks. `just --list` shows them.

export CUDARC_CUDA_VERSION := "13000"

# Features of the test build: the default (cuda, video) plus wgpu, so that CubeCL kernels run on
# Mesa's lavapipe in CI. Keep every recipe on this one combination: each other one rebuilds Burn.
features := "wgpu"

default:
    @just --list

# Install the system packages vsr needs (Debian/Ubuntu; run as root): FFmpeg's libraries, clang
# for their bindings, protobuf for TensorBoard, Mesa's Vulkan driver for CPU-only CubeCL tests.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        build-essential pkg-config clang libclang-dev \
        libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev \
        libavfilter-dev libavdevice-dev \
        protobuf-compiler mesa-vulkan-drivers libvulkan1 ca-certificates python3-pip
    # TensorBoard: to view runs, and the tests read our event files with it.
    python3 -c 'import tensorboard' 2>/dev/null || python3 -m pip install -q tensorboard \
        || python3 -m pip install -q --break-system-packages tensorboard

# Build the release binary.
build:
    cargo build --release --features {{features}}

# Train VSRNet on the bundled clips, prepared at 270p on the first run. The defaults suit a CPU
# (about 5 minutes on 2 cores: the loss falls, PSNR stays far below bilinear's after so few
# steps); on a GPU train for real, e.g. `just train --backend cuda --max-steps 3000 --crop 256x448
# --batch 8`. Later flags override earlier ones. Logs and checkpoints: runs/bundled-<time>.
train *ARGS: bundled-data
    cargo run --release --features {{features}} -- train --data data/bundled --resolution 270p \
        --batch 4 --crop 64x128 --val-crop 128x256 --flownet none --max-steps 60 --val-every 30 \
        --checkpoint-every 30 --min-lr 1e-3 --max-lr 1e-3 --name bundled-$(date -u +%Y%m%dT%H%M%S) {{ARGS}}

# The bundled clips split, transcoded to 270p (GOP 4) and ready to train on.
bundled-data:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -f data/bundled/manifest.json ] && [ -d data/bundled/270p/scenes/val ] && exit 0
    cargo run --release --features {{features}} -- prep all assets/bikes.mp4 assets/bigbuckbunny.mp4 \
        --out data/bundled --detect --resolution 270p --val-scenes 1

# Bundled 720p data: Big Buck Bunny (the one bundled clip with 720 lines), cut in two at 4.24 s
# (assets/bigbuckbunny.cuts): 106 frames to train on, 26 held out. `just train-720p data/bundled-720p`.
bundled-720p:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -f data/bundled-720p/manifest.json ] && [ -d data/bundled-720p/720p/scenes/val ] && exit 0
    cargo run --release --features {{features}} -- prep all assets/bigbuckbunny.mp4 --cuts assets/bigbuckbunny.cuts \
        --out data/bundled-720p --val-scenes 1 --resolution 720p

# The original's run.sh: 720p data, batch 2, 3 frames, 512x960 crops, cyclic LR 1e-4..1e-3, fp32.
# DATA: a `vsr prep` directory with 720p transcodes. Needs FlowNet2-SD_checkpoint.pth.tar (or --flownet none).
train-720p DATA *ARGS:
    cargo run --release --features {{features}} -- train --data {{DATA}} --resolution 720p --batch 2 \
        --frames 3 --crop 512x960 --min-lr 1e-4 --max-lr 1e-3 {{ARGS}}

# The original README's fp16 run: batch 7, min_lr = max_lr = 1e-3.
train-fp16 DATA *ARGS:
    cargo run --release --features {{features}} -- train --data {{DATA}} --resolution 720p --batch 7 \
        --frames 3 --crop 512x960 --min-lr 1e-3 --max-lr 1e-3 --precision fp16 {{ARGS}}

# Two short identical CPU runs: their loss curves must match bit for bit.
reproduce: (bundled-data)
    #!/usr/bin/env bash
    set -euo pipefail
    for r in a b; do
        cargo run --release --features {{features}} -- train --data data/bundled --resolution 270p --batch 2 \
            --crop 64x128 --val-crop 256x448 --flownet none --max-steps 20 --seed 7 --backend cpu \
            --runs-dir runs/reproduce --name $r-$(date -u +%s) >/dev/null
    done
    cargo run --release --features {{features}} -- compare $(ls -d runs/reproduce/a-* | tail -1) $(ls -d runs/reproduce/b-* | tail -1)

# Plot the curves of runs (loss, PSNR, LR) into one PNG: `just plot runs/a runs/b -o curves.png`
plot +ARGS:
    cargo run --release --features {{features}} -- plot {{ARGS}}

# Against the PyTorch that python3 imports (or LIBTORCH=<site-packages>/torch); run the binary with
# LD_LIBRARY_PATH=$LIBTORCH/lib. README: "Building with LibTorch".
# Build the release binary with the LibTorch backend too (`--backend tch`).
build-tch:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -z "${LIBTORCH:-}" ]; then
        LIBTORCH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))') \
            || { echo "no PyTorch for python3: pip install torch==2.11.0, or set LIBTORCH" >&2; exit 1; }
    fi
    export LIBTORCH LIBTORCH_BYPASS_VERSION_CHECK=1
    cargo build --release --features tch
    echo "built target/release/vsr; run it with LD_LIBRARY_PATH=$LIBTORCH/lib"

# Run every test (CPU; the warp kernel also on wgpu/lavapipe).
test:
    cargo test --workspace --features {{features}} --no-fail-fast

# Real forward pass of VSRNet + FlowNetSD on a bundled clip; writes demo.png.
demo *ARGS:
    cargo run --release --features {{features}} -- demo --backend cpu {{ARGS}}

# What this build can run on.
info:
    cargo run --release --features {{features}} -- info

# Prepare a data set from source videos: scenes, transcodes (every down-scale of 4k/1080p/720p/540p).
# e.g. `just prep assets/bikes.mp4 --detect --frames`
prep +ARGS:
    cargo run --release --features {{features}} -- prep all --out data {{ARGS}}

# Transcode speed against the ffmpeg program (same clip, same settings, one thread each).
bench-transcode *ARGS:
    cargo run --release --features {{features}} -- bench transcode {{ARGS}}

# The video loader against the PNG loader, as the original compares them: 720p data prepared from
# the bundled clips (once, under target/), then `vsr bench loaders` with 1 and 2 workers. Table
# and JSON; e.g. `just bench-loaders --step-ms 0` for the loaders' own speed.
bench-loaders *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    data=target/bench-loaders-data
    if [ ! -d "$data/720p/frames/train" ]; then
        cargo run --release --features {{features}} -- prep all assets/bikes.mp4 assets/bigbuckbunny.mp4 \
            --out "$data" --detect --val-scenes 0 --resolution 720p --frames -q
    fi
    cargo run --release --features {{features}} -- bench loaders --data "$data" --resolution 720p \
        --batch 3 --frames 3 --crop 512x960 --workers 1,2 {{ARGS}}
# 4x super-resolution of a video: `just upscale in.mp4 -o out.mp4 --checkpoint vsrnet.pth --flownet FlowNet2-SD_checkpoint.pth.tar`
# (`--flownet none`: no motion compensation). Audio is copied, timestamps kept.
upscale +ARGS:
    cargo run --release --features {{features}} -- upscale {{ARGS}}

# PSNR/SSIM on a benchmark of PNG clips beside bicubic and bilinear: `just eval --gt Vid4/GT --checkpoint vsrnet.pth --flownet none`
eval +ARGS:
    cargo run --release --features {{features}} -- eval {{ARGS}}

# Upscale throughput (frames/s) for input sizes: `just bench-upscale --backend cuda --sizes 480x270,960x540 --precision fp16`
bench-upscale *ARGS:
    cargo run --release --features {{features}} -- bench upscale {{ARGS}}
