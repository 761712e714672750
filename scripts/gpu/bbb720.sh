# Sourced by the training-speed device scripts (profile_train.sh, pinned_upload.sh, race.sh), after
# common.sh: `prep_bbb720` prepares Big Buck Bunny at 720p in /tmp/d720 (once), and
# `bbb_train NAME LOG BACKEND STEPS [VAR=VALUE...]` runs `vsr train` on it with the environment
# given (fp16, batch 3, 512x960, 3 frames, 2 workers, NVDEC, the fixture FlowNetSD, seed 7;
# validation and checkpoints at epoch ends only, every 11 steps), its output in LOG; returns its
# exit status.
prep_bbb720() {
  [ -d /tmp/d720 ] && return 0
  timeout 150 $V prep all assets/bigbuckbunny.mp4 --cuts assets/bigbuckbunny.cuts --val-scenes 1 --out /tmp/d720 \
    --resolution 720p -q >"$OUT/prep.log" 2>&1 || echo "   prep: exit $?"
}
bbb_train() {
  local name=$1 log=$2 be=$3 steps=$4; shift 4
  env "$@" timeout -s INT 240 $V train --backend "$be" --data /tmp/d720 --resolution 720p --frames 3 --batch 3 \
    --crop 512x960 --workers 2 --precision fp16 --flownet "$FLOWNET" --max-steps "$steps" --val-every 100000 \
    --checkpoint-every 100000 --seed 7 --runs-dir /tmp/runs --name "$name" >"$log" 2>&1
}
