#!/usr/bin/env bash
# Issue 8's open GPU rows on one H100 in ONE call of under 10 minutes (a session has 15 device minutes, start-up
# included), most valuable first; each phase is capped so the later ones still run:
#   (1) train: training-step variants vs diffusers eager, alone on the GPU, with kernel profiles naming the copy
#     ops (and diffusers' step with cuDNN autotuning for reference); reduce-overhead with and without Inductor's
#     channels_last layout pass forced on (its GPU heuristics skip it for this UNet's training graphs);
#   (3) forward: forward rows at batch 2,000 with achieved TFLOP/s against the matmul peak, and the roofline
#     (benchmarks/roofline.py) on the measured matmul peak and copy bandwidth;
#   (5) quality: the logsnr few-step row beside the earlier H100 DDPM-1000 baseline, the GPU tests, and one RePaint
#     row in fp32, bf16 autocast and emulated bf16 from the CPU rows' noise (benchmarks/bf16_sampling.py);
#   (6) repaint: the paper's RePaint schedule on the expand mask (the missing r = 10 row) and the fast schedules
#     DDPM-50 j = 40 timesteps r = 10 and DDPM-100 j = 20 timesteps r = 5 on half and expand (n = 300 each).
# Also available: (2) trainer: guidekit's real trainer, eager and --compile-mode reduce-overhead; (4) layouts: the
#   layouts of every compiled convolution (benchmarks/conv_layouts.py).
# Usage: PHASES="..." bash benchmarks/gpu_issue8_train.sh OUT [tiny]   (tiny: a CPU dry run of the same commands).
# Needs diffusers importable (on a bare GPU machine: WHEELS=folder of carried wheels) and the Fashion-MNIST test
# split as gzipped IDX in $FMNIST (the trainer reads it as its train split).
set -u
OUT=${1:?usage: gpu_issue8_train.sh OUT [tiny]}; MODE=${2:-full}; T0=$(date +%s); BUDGET=${BUDGET:-560}
PHASES=${PHASES:-train forward quality repaint}
left() { echo $(( T0 + BUDGET - $(date +%s) )); }
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
want() { [[ " $PHASES " == *" $1 "* ]]; }
W=$(mktemp -d); R=$W/runs; mkdir -p "$OUT" $R $W/data $W/cache
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
for f in images-idx3 labels-idx1; do  # the split the trainer reads as train-*, and the evaluator's test-*
  cp "$FMNIST/t10k-$f-ubyte.gz" $W/data/; cp "$FMNIST/t10k-$f-ubyte.gz" "$W/data/train-$f-ubyte.gz"; done
export PYTHONPATH=$PWD/src:$W/site:${PYTHONPATH:-}  # guidekit from this checkout, carried wheels beside it
[ -n "${WHEELS:-}" ] && python3 -m pip install -q --no-index --no-deps --target $W/site "$WHEELS"/*.whl
export PYTHONUNBUFFERED=1 GUIDEKIT_DATA=$W/data GUIDEKIT_CACHE=$W/cache
GK="python3 -m guidekit.cli"
if [ "$MODE" = tiny ]; then
  DEV=cpu; VS="--small --batch 4 --steps 2 --repeats 1 --warmup 1 --train-steps 1 --train-variants compile"
  FW="--small --batch 2 --forward-batch 2 --repeats 1"; TR="--preset tiny --batch-size 8 --steps 4 --log-every 2"
  LAY="--batch 2 --preset tiny"; NS=20; BASE=ddpm:4; NFE=3; REF=(--reference samples)
  RP=(--n 10 --batch-size 10); PAPER=(--steps 8 --jump-length 2); F50=(--steps 4); F100=(--steps 6)
  BF=(--n 12 --steps 4); MS=256
else
  DEV=cuda; VS="--batch 256 --train-steps 5 --train-variants"
  VS="$VS reduce-overhead,reduce-overhead-layout-opt,diffusers-autotuned,compile,graphed-compile"
  FW="--batch 256 --forward-batch 2000"; TR="--preset base --batch-size 256 --steps 150 --log-every 25"
  LAY="--batch 256"; NS=2000; BASE=dpmpp-2m-sde:15; NFE=15; REF=()
  RP=(--n 300 --batch-size 500); PAPER=(--steps 250 --jump-length 10); F50=(--steps 50); F100=(--steps 100)
  BF=(--n 300); MS=8192
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"; date -u; } \
  > $R/machine.txt 2>&1; cat $R/machine.txt
if want train; then
  log "1: training-step variants vs diffusers ($(left)s left)"
  timeout 240 python3 benchmarks/vs_diffusers.py $VS --dtype bf16 --fast --rows train --profile --device $DEV \
    --json $R/vs_train.json > $R/vs_train.md 2>&1; log "rc=$?"; grep -E "^measured|FAILED" $R/vs_train.md
fi
if want trainer; then
  log "2: guidekit train, eager and reduce-overhead ($(left)s left)"
  for c in eager reduce-overhead; do
    F=(); X=60; [ $c != eager ] && F=(--compile-mode $c) && X=150
    timeout $X $GK train --dataset fashion-mnist --split test $TR --save-every 100000 "${F[@]}" --no-progress \
      --out $R/train-$c > $R/train-$c.log 2>&1; log "train $c rc=$?"; tail -2 $R/train-$c/log.csv
  done
fi
if want forward; then
  log "3: forward rows, and the roofline on this GPU's measured matmul peak and copy bandwidth ($(left)s left)"
  timeout 60 python3 benchmarks/roofline.py --measure $DEV --measure-size $MS > $R/roofline.md 2>&1
  log "roofline rc=$?"; grep -E "^measured|^\| (fused|ceiling)" $R/roofline.md
  timeout 110 python3 benchmarks/vs_diffusers.py $FW --dtype bf16 --fast --rows forward --device $DEV \
    --json $R/vs_forward.json > $R/vs_forward.md 2>&1; log "rc=$?"; grep -E "^measured|FAILED|TFLOP" $R/vs_forward.md
fi
if want layouts && [ "$(left)" -gt 250 ]; then
  log "4: convolution layouts of the compiled step ($(left)s left)"
  timeout 120 python3 benchmarks/conv_layouts.py --device $DEV $LAY --keep $W/code > $R/conv_layouts.txt 2>&1
  log "rc=$?"; tail -3 $R/conv_layouts.txt
fi
if want quality; then
  log "5: logsnr few-step row and the GPU tests ($(left)s left)"
  ( timeout 70 $GK sweep steps fmnist-cfg --w 0 --n $NS --nfe $NFE --spacing logsnr \
      --baseline $BASE --samplers dpmpp-2m-sde --batch-size 1000 --device $DEV "${REF[@]}" --no-progress \
      --out $R/steps-logsnr > $R/steps-logsnr.log 2>&1; echo "rc=$?" >> $R/steps-logsnr.log ) &
  ( timeout 70 python3 -m pytest -q -p no:cacheprovider tests/test_fast.py -k "gpu or sync_free" \
      > $R/gpu-tests.log 2>&1; echo "rc=$?" >> $R/gpu-tests.log ) &
  ( timeout 70 python3 benchmarks/bf16_sampling.py "${BF[@]}" --device $DEV > $R/bf16.log 2>&1
    echo "rc=$?" >> $R/bf16.log ) &
  wait
  for f in steps-logsnr.log gpu-tests.log bf16.log; do echo "== $f"; tail -3 $R/$f; done
fi
if want repaint; then  # the paper's expand row first: it is the one missing from docs/results.md
  log "6: RePaint paper schedule on expand, then the fast schedules on half and expand ($(left)s left)"
  SW="$GK sweep repaint fmnist-cfg --jump-n-sample 10 --sampler ddpm --device $DEV --no-progress ${REF[*]} ${RP[*]}"
  timeout $(( $(left) - 60 )) $SW --masks expand ${PAPER[*]} --out $R/rp-paper > $R/rp-paper.log 2>&1
  log "paper rc=$?"; cat $R/rp-paper/results.csv 2>/dev/null
  timeout $(( $(left) - 35 )) $SW --masks half,expand ${F50[*]} --jump-timesteps 40 --out $R/rp-ddpm50 \
    > $R/rp-ddpm50.log 2>&1; log "ddpm-50 rc=$?"
  timeout $(( $(left) - 10 )) $SW --masks half,expand ${F100[*]} --jump-timesteps 20 --jump-n-sample 5 \
    --out $R/rp-ddpm100 > $R/rp-ddpm100.log 2>&1; log "ddpm-100 rc=$?"
  tail -n +2 $R/rp-ddpm50/results.csv $R/rp-ddpm100/results.csv 2>/dev/null
fi
rm -rf $R/train-*/checkpoints $R/train-*/model; find $R -type d -name samples -prune -exec rm -rf {} +
[ -d $W/code ] && tar czf "$OUT/code.tgz" -C $W code
tar czf "$OUT/runs-$(date +%s).tgz" -C $R . && ls -la "$OUT"; log "packed ($(left)s left)"
