#!/usr/bin/env bash
# Issue 8's GPU measurements in one run (over 15 minutes on one H100: split it; docs/results.md says what each measured):
# guidekit vs diffusers (fp32 eager; bf16 with guidekit's fast path), few-step FID vs DDPM-1000, and RePaint's paper
# schedule vs a 1/5-NFE DDIM schedule.
# Usage: bash benchmarks/gpu_issue8.sh OUT [SCALE]   (SCALE=tiny: a seconds-long CPU dry run of the same commands)
# Needs guidekit with its kornia dependency and the diffusers extra importable (on a bare GPU machine: pip install
# wheels carried along, e.g. pip download --python-version 3.12 --only-binary=:all: kornia diffusers) and the
# Fashion-MNIST test split ($GUIDEKIT_DATA).
set -euo pipefail
OUT=${1:?usage: gpu_issue8.sh OUT [tiny]}
SCALE=${2:-full}
mkdir -p "$OUT"
gk() { python -m guidekit.cli "$@"; }
if [ "$SCALE" = tiny ]; then
  DEV=(--device cpu); BENCH=(--small --batch 4 --steps 2 --repeats 1 --device cpu); N=20; NR=10; NFE=2,3; BASE=ddpm:4
  RP=(--steps 8 --jump-length 2); RF=(--steps 4 --jump-timesteps 250); REF=(--reference samples)
  FAST=()  # a CPU torch.compile of the UNet takes many minutes: the dry run checks the other rows
else
  DEV=(--device cuda); BENCH=(--batch 256 --forward-batch 512 --steps 50 --device cuda); N=2000; NR=300; NFE=10,15,20,50
  BASE=ddpm:1000; RP=(--steps 250 --jump-length 10); RF=(--steps 50 --jump-timesteps 40); REF=(); FAST=(--fast)
fi
python benchmarks/vs_diffusers.py "${BENCH[@]}" --dtype fp32 --json "$OUT/vs_fp32.json" | tee "$OUT/vs_fp32.md"
python benchmarks/vs_diffusers.py "${BENCH[@]}" --dtype bf16 "${FAST[@]}" --json "$OUT/vs_bf16.json" | tee "$OUT/vs_bf16.md"
python benchmarks/vs_diffusers.py "${BENCH[@]}" --dtype bf16 "${FAST[@]}" --rows train --profile --json "$OUT/vs_train.json" \
  | tee "$OUT/vs_train.md"
gk sweep steps fmnist-cfg --w 0 --n "$N" --nfe "$NFE" --baseline "$BASE" --samplers dpmpp-2m-sde,dpmpp-2m,ddim \
  --batch-size 1000 "${DEV[@]}" "${REF[@]}" --no-progress --out "$OUT/steps"
# steps uniform in log-SNR; compare its rows with the DDPM-1000 row of the sweep above (same labels and seeds)
gk sweep steps fmnist-cfg --w 0 --n "$N" --nfe "$NFE" --spacing logsnr --baseline "${BASE_LOGSNR:-dpmpp-2m-sde:15}" \
  --samplers dpmpp-2m-sde,dpmpp-2m --batch-size 1000 "${DEV[@]}" "${REF[@]}" --no-progress --out "$OUT/steps-logsnr"
for name in paper fast; do
  if [ "$name" = paper ]; then S=(--sampler ddpm "${RP[@]}"); else S=(--sampler ddim "${RF[@]}"); fi
  gk sweep repaint fmnist-cfg --masks wide,half,expand --n "$NR" --jump-n-sample 10 "${S[@]}" --batch-size 500 \
    "${DEV[@]}" "${REF[@]}" --no-progress --out "$OUT/repaint-$name"
done
