#!/usr/bin/env bash
# Does bf16 autocast move EMCL's fine-tune? Seed 0's base and EMCL fine-tunes from the shipped
# video-pretrained backbone, under fp32 and under bf16 autocast, on this machine's CPU, each pair
# scored by `python -m emcl evaluate` (docs/benchmarks.md §12). About 40 min on 2 cores.
#
#     bash bench/precision_gap.sh      # -> bench/results/precision_s0_{fp32,bf16}_cpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
W=.cache/demo_world_v2
B=checkpoints/demo-pretrain-video
date; echo "world"; time python -m emcl world --version 2 --out $W --workers 2
date; echo "frames"; time python - <<'PY'
from emcl.study.run import StudyConfig, prepare_frames
prepare_frames(StudyConfig(seeds=(0, 1), pretrained="checkpoints/demo-pretrain-video"))
PY
run() {  # precision kind
  local out=runs/gap/$1-$2; local flag=""; [ "$2" = base ] && flag="--no-emcl"
  OMP_NUM_THREADS=1 python -m emcl train --preset demo-v2 --seed 0 --data $W --init-from $B \
    --out $out --export $out/export --resume --precision $1 $flag --quiet > runs/gap/$1-$2.log 2>&1
}
mkdir -p runs/gap
date; echo "bf16 pair"; time (run bf16 emcl & run bf16 base & wait)
date; echo "fp32 pair"; time (run fp32 emcl & run fp32 base & wait)
for p in bf16 fp32; do
  python -m emcl evaluate --checkpoint runs/gap/$p-emcl/export --base-checkpoint runs/gap/$p-base/export \
    --data $W --no-sweeps --quiet --json bench/results/precision_s0_${p}_cpu.json
done
date; echo done
