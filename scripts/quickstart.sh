#!/usr/bin/env bash
# The main job on a fresh machine: set up whatever is missing, then run the quickstart
# (scikit-learn's digits, 5 tasks of 2 classes) on 4 local MPI ranks.
# Extra arguments go to `hpccl run`, e.g.  scripts/quickstart.sh --set learner=scratch
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/hpccl" run jobs/quickstart.yaml -n 4 "$@"
