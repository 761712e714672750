#!/usr/bin/env bash
# Builds the FFmpeg that the GPU machine needs (it has none and reaches no network): Debian 12's
# own FFmpeg source package, the exact version of the installed libavcodec-dev headers that vsr is
# compiled against, configured as shared libraries with Debian's sonames and symbol versions
# (libavcodec.so.59, LIBAVCODEC_59, ...), so that a vsr binary linked here against Debian's
# libraries loads these unchanged through LD_LIBRARY_PATH. Only what vsr uses is enabled:
#   - H.264 decoding (h264 decoder + parser) of MP4/MOV input, libx264 encoding into MP4;
#   - H.264 decoding on the GPU (NVDEC: the h264_cuvid decoder and libavutil's CUDA device
#     context; both load libcuda/libnvcuvid at run time, so the libraries still run without a
#     GPU). Two patches to cuviddec: decoded pictures are mapped on the device context's stream
#     rather than CUDA's legacy default stream, which would serialise every mapping with
#     LibTorch's kernels (later FFmpeg releases do the same); and a seek (flush) keeps the NVDEC
#     decoder instead of destroying it (the new parser's sequence callback reuses a decoder of
#     the same format), since creating one costs tens of milliseconds;
#   - audio streams are only demuxed/muxed (stream copy): aac/ac3/mp3 parsers, the aac decoder,
#     aac_adtstoasc;
#   - swscale (yuv420p <-> rgb24 <-> any decoded format), swresample;
#   - libavfilter with only the graph basics (buffer/buffersink, format, null, scale, aresample),
#     libavdevice with no device: vsr's scene detection computes the `select` filter's score
#     itself, these libraries only have to load.
# Installs the stripped .so files, plus libx264.so.164 (Debian's) and anything else they need
# beyond glibc, into .gpu/ffmpeg/lib/; with VSR_BIN=<vsr binary> also that binary's own
# non-glibc dependencies, and checks that every symbol it takes from FFmpeg resolves (ldd -r).
# Idempotent: the source and build tree stay in $VSR_FFMPEG_WORK (default target/ffmpeg-build,
# git-ignored), a rerun only re-installs. Needs root for apt (nasm, libx264-dev, dpkg-dev,
# libffmpeg-nvenc-dev: NVIDIA's codec headers).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=${VSR_FFMPEG_WORK:-$root/target/ffmpeg-build}
dest=$root/.gpu/ffmpeg/lib
jobs=${VSR_FFMPEG_JOBS:-2}
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

# Build tools and x264's headers; libavcodec-dev tells which source version matches vsr's headers.
need=()
for p in nasm libx264-dev libffmpeg-nvenc-dev dpkg-dev pkg-config build-essential libavcodec-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
version=$(dpkg-query -W -f='${source:Version}' libavcodec-dev)   # e.g. 7:5.1.9-0+deb12u1
upstream=${version#*:}; upstream=${upstream%-*}                     # 5.1.9
revision=${version##*-}                                             # 0+deb12u1
src=$work/ffmpeg-$upstream

# Source: through apt, from a private deb-src list (the system's apt configuration is left alone).
if [ ! -f "$src/.vsr-source-$version" ]; then
  rm -rf "$work/apt" "$src"
  mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  cat >"$work/apt/sources.list" <<EOF
deb-src http://deb.debian.org/debian $codename main
deb-src http://deb.debian.org/debian $codename-updates main
deb-src http://deb.debian.org/debian-security $codename-security main
EOF
  apt_o=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent -o APT::Sandbox::User=root
         -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache")
  apt-get "${apt_o[@]}" update -qq
  (cd "$work" && apt-get "${apt_o[@]}" source -qq "ffmpeg=$version") || {
    echo "apt has no source for ffmpeg $version (the headers' version): upgrade libavcodec-dev and rerun" >&2
    exit 1
  }
  touch "$src/.vsr-source-$version"
fi
# cuviddec: pictures mapped on the decoder's stream, decoders kept across seeks (see above);
# idempotent.
cuvid=$src/libavcodec/cuviddec.c
if ! grep -q 'params.output_stream' "$cuvid"; then
  sed -i 's|^\( *\)params.top_field_first = parsed_frame.dispinfo.top_field_first;|&\n\1params.output_stream = device_hwctx->stream;|' "$cuvid"
  grep -q 'params.output_stream = device_hwctx->stream;' "$cuvid" || { echo "cannot patch $cuvid" >&2; exit 1; }
fi
if ! grep -q 'vsr: the decoder is kept' "$cuvid"; then
  perl -0pi -e 's|(av_fifo_reset2\(ctx->frame_queue\);\n)\n    if \(ctx->cudecoder\) \{\n        ctx->cvdl->cuvidDestroyDecoder\(ctx->cudecoder\);\n        ctx->cudecoder = NULL;\n    \}\n|$1    /* vsr: the decoder is kept; the new parser reuses it (same format) */\n|' "$cuvid"
  grep -q 'vsr: the decoder is kept' "$cuvid" || { echo "cannot patch cuvid_flush in $cuvid" >&2; exit 1; }
fi

config=(
  --prefix=/usr --libdir=/usr/lib/$multiarch --incdir=/usr/include/$multiarch
  --extra-version="$revision+vsr" --toolchain=hardened  # +vsr: av_version_info() tells vsr these patches are in
  --enable-gpl --enable-shared --disable-static
  --disable-programs --disable-doc --disable-debug
  # no external library but x264 (no zlib, xlib, vaapi, libdrm, sdl2, ...): portable as is
  --disable-autodetect --enable-pthreads --enable-libx264
  --disable-everything --enable-dct --enable-rdft  # public av_dct_*/av_rdft_* API, as in Debian's
  --enable-ffnvcodec --enable-cuvid --enable-decoder=h264,h264_cuvid,aac,aac_latm
  --enable-encoder=libx264
  --enable-parser=h264,aac,aac_latm,ac3,mpegaudio
  --enable-demuxer=mov
  --enable-muxer=mp4,mov
  --enable-protocol=file
  --enable-bsf=h264_mp4toannexb,aac_adtstoasc
  --enable-filter=buffer,buffersink,abuffer,abuffersink,format,aformat,null,anull,scale,aresample
  --enable-swscale --enable-swresample --enable-avfilter --enable-avdevice --disable-postproc
)
build=$work/build
stamp="${config[*]}"
if [ ! -f "$build/config.h" ] || [ "$(cat "$build/.vsr-config" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$build" && mkdir -p "$build"
  (cd "$build" && "$src/configure" "${config[@]}" >configure.log 2>&1) || {
    tail -30 "$build/configure.log" "$build/ffbuild/config.log" >&2
    exit 1
  }
  echo "$stamp" >"$build/.vsr-config"
fi
grep -q '^#define HAVE_PTHREADS 1' "$build/config.h" || { echo "configure found no pthreads" >&2; exit 1; }
nice -n 10 make -C "$build" -j"$jobs" >"$build/make.log" 2>&1 || { tail -40 "$build/make.log" >&2; exit 1; }
rm -rf "$build/staging" && make -C "$build" install DESTDIR="$build/staging" >/dev/null

rm -rf "$dest" && mkdir -p "$dest"
# sonames only (libavcodec.so.59 -> real file), what the dynamic loader looks up
for f in "$build/staging/usr/lib/$multiarch"/lib*.so.*.*.*; do
  soname=$(objdump -p "$f" | awk '/SONAME/{print $2}')
  cp -L "$f" "$dest/$soname"
done

# Everything these libraries and vsr need beyond glibc/libstdc++/libgcc and the GPU driver, taken
# from this machine (for the libraries, only libx264.so.164 today). A bare Ubuntu 24.04 has
# glibc 2.39, libstdc++ and libgcc_s; all else travels.
# VSR_EXTERNAL_LIBS=<dir>: libraries the GPU machine has at its own place (LibTorch: a local copy
# of its site-packages with torch/ and nvidia/), resolved from <dir>/torch/lib here for the checks,
# never carried.
base='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libgcc_s|libstdc\+\+|libcuda|libnvidia-.*)\.so'
ext=${VSR_EXTERNAL_LIBS:-}
ldpath=$dest${ext:+:$ext/torch/lib}
bins=("$dest"/*)
[ -n "${VSR_BIN:-}" ] && bins+=("$VSR_BIN")
for b in "${bins[@]}"; do
  while read -r name path; do
    [[ $name =~ $base ]] && continue
    [ -n "$ext" ] && [[ $path == "$ext"/* ]] && continue
    [ -e "$dest/$name" ] && continue
    [ "$path" = "not" ] && { echo "$b needs $name, which is not found here" >&2; exit 1; }
    cp -L "$path" "$dest/$name"
  done < <(LD_LIBRARY_PATH=$ldpath ldd "$b" | awk '$2=="=>"{print $1, $3}')
done
# Loaded with dlopen, so invisible to ldd: wgpu's Vulkan loader (a bare Ubuntu has none; the NVIDIA
# driver brings only its ICD). CUDA's libcuda/libnvrtc come from the GPU machine. Set
# VSR_DLOPEN_LIBS="" to leave it out.
for name in ${VSR_DLOPEN_LIBS-libvulkan.so.1}; do
  path=$(ldconfig -p | awk -v n="$name" '$1==n && /x86-64/{print $NF; exit}')
  [ -n "$path" ] || { echo "$name not installed here (apt-get install libvulkan1), not carried" >&2; continue; }
  cp -L "$path" "$dest/$name"
done
chmod 644 "$dest"/*
strip --strip-unneeded "$dest"/*

missing=$(for f in "$dest"/* ${VSR_BIN:+"$VSR_BIN"}; do LD_LIBRARY_PATH=$ldpath ldd -r "$f" 2>&1 | grep -E "not found|undefined symbol" || true; done)
[ -z "$missing" ] || { echo "unresolved: $missing" >&2; exit 1; }
echo "FFmpeg $upstream ($revision) minimal, in $dest:"
ls -l "$dest" | awk 'NR>1{printf "  %-28s %9d\n", $9, $5}'
echo "total: $(du -cb "$dest"/* | tail -1 | cut -f1) bytes; xz: $(tar -C "$dest" -cf - . | xz -T2 -9 | wc -c) bytes"
