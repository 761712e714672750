#!/usr/bin/env bash
# Issue 6 on the GPU machine: the video loader decoding on NVDEC, in one call:
#   1. the data tests' NVDEC check: every window of an epoch equals the CPU decoder's, bit for bit
#      (keyframe intervals 1, 4, 12; decoders going forward and reopened all the time);
#   2. 720p from the bundled Big Buck Bunny (as proof.sh), PNG frames too;
#   3. `vsr bench loaders` with the CPU decoder and NVDEC, 1, 2 and 4 workers, 30 ms simulated
#      step; then as fast as each goes (step 0);
#   4. short LibTorch fp16 training runs (the fixture FlowNetSD, batch 3, 512x960) decoding with
#      NVDEC and with the CPU, 2 workers: the data wait per step beside the real step.
# Needs .gpu/vsr-tch and .gpu/data-tch (scripts/gpu/stage_tch.sh, then the data test binary).
# Logs and JSON in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
V=.gpu/vsr-tch
WORKERS=${WORKERS:-1,2,4}
STEPS=${STEPS:-120}
PARTS=${PARTS:-tests,loaders,step0,delay,train}   # which parts, comma-separated
part() { [[ ,$PARTS, == *,$1,* ]]; }

if part tests; then
echo "== data tests: NVDEC windows equal the CPU decoder's"
VSR_TEST_NVDEC=0 timeout 240 .gpu/data-tch --include-ignored --nocapture --test-threads 1 decoder nvdec >"$OUT/data_nvdec.log" 2>&1
echo "   exit $?"; grep -E "NVDEC, gop|^note" "$OUT/data_nvdec.log" | cut -c1-220; verdict "$OUT/data_nvdec.log"; stamp
fi

echo "== prep: Big Buck Bunny at 720p, cut at 4.24 s, + PNG frames"
timeout 120 $V prep all assets/bigbuckbunny.mp4 --cuts assets/bigbuckbunny.cuts --val-scenes 1 --out /tmp/d720 \
  --resolution 720p --frames -q >"$OUT/prep.log" 2>&1 || echo "   prep: exit $?"
tail -n 2 "$OUT/prep.log"; stamp

if part loaders; then
echo "== loaders: CPU decoder and NVDEC, workers $WORKERS, 30 ms simulated step"
timeout 200 $V bench loaders --data /tmp/d720 --resolution 720p --batch 3 --frames 3 --crop 512x960 --workers "$WORKERS" \
  --decoders cpu,nvdec --json "$OUT/loaders.json" >"$OUT/loaders.log" 2>&1 || echo "   loaders: exit $?"
grep -E "^\||rror|^note|times the bytes" "$OUT/loaders.log"; stamp
fi
if part step0; then
echo "== video loader as fast as it goes (step 0)"
timeout 120 $V bench loaders --data /tmp/d720 --resolution 720p --batch 3 --frames 3 --crop 512x960 --workers 1,2,4 \
  --loaders video --decoders cpu,nvdec --step-ms 0 --iters 100 --json "$OUT/loaders_step0.json" >"$OUT/loaders_step0.log" 2>&1 \
  || echo "   loaders step 0: exit $?"
grep -E "^\||rror|^note" "$OUT/loaders_step0.log"; stamp
fi
if part delay; then
echo "== NVDEC with h264_cuvid's display delay (VSR_NVDEC_LOW_DELAY=0), 30 ms step, then step 0"
for s in 30 0; do
  VSR_NVDEC_LOW_DELAY=0 timeout 100 $V bench loaders --data /tmp/d720 --resolution 720p --batch 3 --frames 3 --crop 512x960 \
    --workers 1,2 --loaders video --decoders nvdec --step-ms $s --iters 100 --json "$OUT/loaders_delay_$s.json" \
    >"$OUT/loaders_delay_$s.log" 2>&1 || echo "   display delay, step $s: exit $?"
  grep -E "^\| video|rror" "$OUT/loaders_delay_$s.log"
done; stamp
fi

train() {  # decoder
  timeout -s INT 150 $V train --backend tch --precision fp16 --data /tmp/d720 --resolution 720p --frames 3 --batch 3 \
    --crop 512x960 --flownet $FLOWNET --workers 2 --decoder "$1" --max-steps "$STEPS" --val-every 100000 \
    --checkpoint-every 100000 --runs-dir /tmp/runs --name "$1" >"$OUT/train_$1.log" 2>&1; echo "   $1: exit $?"
  grep -E "video decoder|rror|^timing" "$OUT/train_$1.log" | head -4
}
part train && for d in nvdec cpu; do echo "== training, fp16, 2 workers, --decoder $d"; train $d; stamp; done
