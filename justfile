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
        protobuf-compiler mesa-vulkan-drivers libvulkan1 ca-certificates

# Build the release binary.
build:
    cargo build --release --features {{features}}

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
