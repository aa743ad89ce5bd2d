#!/usr/bin/env bash
# Zero-shot restoration's targets at n = 2,000 per row on one GPU in ONE call of under 10 minutes (the CPU rows of
# docs/results.md are n = 500, and n = 20 for the 1,000-step PSNR reference):
#   (1) main:   guidekit sweep restore fmnist-cfg, every task and method at 20 steps, σ_y 0 and 0.05, at ∅;
#   (2) true:   the same with each image's true class (the model sees y; w = 0);
#   (3) steps:  DDNM and ΠGDM at 20, 50 and 1,000 steps (σ_y = 0, n = 500) for the "≤ 50 NFE within 5 % of
#               1,000-step PSNR" target.
# Usage: bash benchmarks/gpu_issue25_restore.sh OUT [tiny]   (tiny: a CPU dry run of the same commands).
# Needs the Fashion-MNIST IDX files (gzipped) in $FMNIST.
set -u
OUT=${1:?usage: gpu_issue25_restore.sh OUT [tiny]}; MODE=${2:-full}; T0=$(date +%s); BUDGET=${BUDGET:-560}
left() { echo $(( T0 + BUDGET - $(date +%s) )); }
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
W=$(mktemp -d); mkdir -p "$OUT" $W/cache
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 GUIDEKIT_CACHE=$W/cache
export GUIDEKIT_DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
GK="python3 -m guidekit.cli"
if [ "$MODE" = tiny ]; then
  DEV=cpu; N=10; N2=10; B=10; STEPS=(2 3 4); REF=(--data samples --reference samples); TASKS=sr4
else
  DEV=cuda; N=2000; N2=500; B=500; STEPS=(20 50 1000); REF=(); TASKS=inpaint,sr2,sr4,deblur
fi
SW=($GK sweep restore fmnist-cfg --batch-size $B --device $DEV "${REF[@]}" --no-progress --sigma-y 0,0.05)
log "main ($(left) s left)"; timeout $(( $(left) - 200 )) "${SW[@]}" --n $N --steps ${STEPS[0]} --tasks $TASKS \
  --out "$OUT/main" > "$OUT/main.log" 2>&1
log "true class ($(left) s left)"; timeout $(( $(left) - 150 )) "${SW[@]}" --n $N --steps ${STEPS[0]} \
  --tasks $TASKS --labels true --out "$OUT/true" > "$OUT/true.log" 2>&1
for s in "${STEPS[@]}"; do
  log "steps $s ($(left) s left)"; timeout $(( $(left) - 5 )) $GK sweep restore fmnist-cfg --batch-size $B \
    --device $DEV "${REF[@]}" --no-progress --sigma-y 0 --n $N2 --steps $s --tasks $TASKS --methods ddnm,pigdm \
    --repaint-r 1 --out "$OUT/steps$s" > "$OUT/steps$s.log" 2>&1
done
log "done"
