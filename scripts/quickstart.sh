#!/usr/bin/env bash
# The main job on a fresh machine: set up whatever is missing, then run the quickstart
# (scikit-learn's digits, 5 tasks of 2 classes, 4 local MPI ranks) with the rehearsal
# learner, and, on the same data and ranks, incremental (lower bound) and scratch (upper
# bound); print them side by side. Extra arguments go to every `hpccl run`,
# e.g.  scripts/quickstart.sh --set runtime.backend=torch
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
study="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
for learner in rehearsal incremental scratch; do
  echo "== $learner"
  .venv/bin/hpccl run jobs/quickstart.yaml -n 4 --set learner=$learner --out "$study/$learner" "$@"
done
echo
echo "== the three learners on the same data and ranks ($study)"
.venv/bin/hpccl analyze --compare "$study"/rehearsal "$study"/incremental "$study"/scratch
