#!/usr/bin/env bash
# The test suite on a fresh machine: set up whatever is missing, then run pytest.
# Extra arguments go to pytest, e.g.  scripts/test.sh -k config
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# Tests write run directories and converted data under a throw-away cache, not ~/.cache.
export HPCCL_DATA_CACHE=${HPCCL_DATA_CACHE:-$(mktemp -d)/data}
exec "$ROOT/.venv/bin/python" -m pytest tests "$@"
