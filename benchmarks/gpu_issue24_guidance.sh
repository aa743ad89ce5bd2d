#!/usr/bin/env bash
# Issue 24's targets at n = 2,000 per row on one GPU in ONE call of under 10 minutes:
#   (1) bad:     the autoguidance model, a tiny preset trained like fmnist-cfg for 60 s;
#   (2) distill: a guidance-distilled student of fmnist-cfg (w in [0, 4]) for 150 s;
#   (3) sweep:   guidekit sweep guidance fmnist-cfg over every method on the same seeds, DDIM-20, with both;
#   (4) interval: the interval rows again at the band that guides 6 of 20 steps (NFE 26 = 65 % of CFG's 40).
# Usage: bash benchmarks/gpu_issue24_guidance.sh OUT [tiny]   (tiny: a CPU dry run of the same commands).
# Needs the Fashion-MNIST IDX files (train and test, gzipped) in $FMNIST.
set -u
OUT=${1:?usage: gpu_issue24_guidance.sh OUT [tiny]}; MODE=${2:-full}; T0=$(date +%s); BUDGET=${BUDGET:-560}
left() { echo $(( T0 + BUDGET - $(date +%s) )); }
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
W=$(mktemp -d); mkdir -p "$OUT" $W/cache
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 GUIDEKIT_CACHE=$W/cache
export GUIDEKIT_DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
GK="python3 -m guidekit.cli"
if [ "$MODE" = tiny ]; then
  DEV=cpu; BAD=(--steps 3 --batch-size 8); DIS=(--steps 3 --batch-size 8); N=20; B=20; STEPS=3; REF=(--data samples)
  WS=0,1; LS=0.5; T1=60; T2=60
else
  DEV=cuda; BAD=(--steps 100000 --batch-size 512 --lr 1e-3 --max-minutes 1); DIS=(--steps 100000 --batch-size 512
  --lr 3e-4 --warmup 30 --max-minutes 2.5); N=2000; B=1000; STEPS=20; REF=(); WS=0,0.1,0.2,0.3,0.5,1,2,4
  LS=0.2,0.4,0.6,0.8,1; T1=100; T2=190
fi
log "bad model"; timeout $T1 $GK train --dataset fashion-mnist --prediction v --p-uncond 0.15 --ema-decay 0.999 \
  --preset tiny --warmup 100 --save-every 100000 "${BAD[@]}" --no-progress --out $W/bad > "$OUT/bad.log" 2>&1
log "distill"; timeout $T2 $GK distill fmnist-cfg --w-range 0,4 --save-every 100000 "${DIS[@]}" --no-progress \
  --out $W/student > "$OUT/distill.log" 2>&1
SW=($GK sweep guidance fmnist-cfg --n $N --batch-size $B --sampler ddim --steps $STEPS --spacing trailing --device $DEV
    "${REF[@]}" --no-progress)
log "sweep ($(left) s left)"; timeout $(( $(left) - 70 )) "${SW[@]}" --w $WS --lambdas $LS \
  --guide-model $W/bad/model --student $W/student/model --out "$OUT/sweep" > "$OUT/sweep.log" 2>&1
log "interval ($(left) s left)"; timeout $(( $(left) - 5 )) "${SW[@]}" --methods cfg,interval --w $WS \
  --interval 0.6,3 --out "$OUT/sweep-interval" > "$OUT/sweep-interval.log" 2>&1
cp $W/bad/log.csv "$OUT/bad-log.csv" 2>/dev/null; cp $W/student/log.csv "$OUT/distill-log.csv" 2>/dev/null
log "done"
