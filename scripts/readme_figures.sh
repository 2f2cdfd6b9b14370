#!/usr/bin/env bash
# Regenerates what the README and docs/analysis.md show, from real runs on this machine: the
# quickstart's three learners side by side, and a small local weak-scaling sweep (1, 2, 4
# ranks), with figures.
# Output: docs/figures/*.png and *.md (tables). Run directories go to runs/readme-TIME/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
H=.venv/bin/hpccl
OUT=runs/readme-$(date +%Y%m%d-%H%M%S)
FIG=docs/figures
mkdir -p "$FIG"

# 1. the quickstart: rehearsal vs incremental vs scratch, same data and ranks
for learner in rehearsal incremental scratch; do
  $H run jobs/quickstart.yaml -n 4 --set learner=$learner --set log.progress=off --out "$OUT/quickstart/$learner"
done
runs=("$OUT"/quickstart/{rehearsal,incremental,scratch})
$H analyze --compare "${runs[@]}" --format md > "$FIG/quickstart_compare.md"
$H analyze --compare "${runs[@]}"
$H analyze "${runs[@]}" --plot "$FIG" > /dev/null

# 2. a weak-scaling sweep on the local site: rendered as for a cluster (manifest + one batch
#    script per point), then run one point after another so the points do not share the cores
$H submit jobs/quickstart.yaml --site local --scaling weak --gpus 1,2,4 --set scenario.num_tasks=2 \
   --set log.progress=off --out "$OUT/sweep" --dry-run > /dev/null
for script in "$OUT"/sweep/*/job.sh; do bash "$script" > "$(dirname "$script")/job.out" 2>&1; done
$H analyze "$OUT/sweep" --format md > "$FIG/sweep_weak.md"
$H analyze "$OUT/sweep" --plot "$FIG"
cp "$FIG/scaling_sweep.png" "$FIG/scaling_weak.png" 2>/dev/null && rm -f "$FIG/scaling_sweep.png" || true
echo "figures and tables in $FIG (runs in $OUT)"
