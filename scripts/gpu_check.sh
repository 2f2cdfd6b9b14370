#!/usr/bin/env bash
# The GPU check of issue #15, for a one-GPU machine: offline, with a CUDA build of torch,
# h5py and mpi4py installed, no Horovod (so the torch backend, one rank). Runs the quickstart
# with device cuda and benchmarks/throughput.py, then prints one table. About 3 minutes on an
# H100/H200; everything it writes goes to a temporary directory.
#
#   scripts/gpu_check.sh                      # python3 on PATH, device cuda
#   PYTHON=.venv/bin/python GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh   # a dry run without a GPU
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PRESET=${GPU_CHECK_PRESET:-$([[ $DEVICE == cuda ]] && echo gpu || echo tiny)}   # tiny: a dry run on CPU checks the script, in minutes
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HPCCL_DATA_CACHE=$WORK/data PYTHONUNBUFFERED=1

"$PY" - "$DEVICE" <<'PYEOF' || exit 1
import sys
missing = []
for name in ("torch", "numpy", "h5py", "mpi4py", "yaml", "sklearn"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)} (carry them as wheels)")
import torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device")
PYEOF

status=0
echo "== the CUDA-only tests (tests/test_cuda_paths.py, tests/rtrl/test_gradients.py::test_cuda_matches_cpu)"
timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_paths.py \
    tests/rtrl/test_gradients.py::test_cuda_matches_cpu -rs > "$WORK/cuda_tests.txt" 2>&1 || status=1
tail -3 "$WORK/cuda_tests.txt"

echo "== quickstart (jobs/quickstart.yaml, 1 rank, torch backend, device $DEVICE)"
timeout 300 "$PY" -m hpccl run jobs/quickstart.yaml --set runtime.backend=torch \
    --set runtime.device="$DEVICE" --set log.progress=lines --out "$WORK/quickstart" || status=1
"$PY" -m hpccl analyze "$WORK/quickstart" --format json > "$WORK/quickstart.json" 2>/dev/null || status=1

echo "== host memory of a CUDA context (what hpccl's host memory estimate assumes: 2 GB)"
timeout 120 "$PY" - "$DEVICE" > "$WORK/context.json" <<'PYEOF' || status=1
import json, sys
from hpccl.core.memory import peak_rss_bytes, pss_bytes
import torch, torch.nn.functional as F
before = pss_bytes() or peak_rss_bytes()
if sys.argv[1] == "cuda":       # the context, cuBLAS and cuDNN: what a training step loads
    x = torch.randn(8, 3, 32, 32, device="cuda")
    (torch.randn(64, 64, device="cuda") @ torch.randn(64, 64, device="cuda")).sum().item()
    F.conv2d(x, torch.randn(4, 3, 3, 3, device="cuda")).sum().item()
after = pss_bytes() or peak_rss_bytes()
print(json.dumps({"context_bytes": after - before}))
PYEOF

PRECISIONS=${GPU_CHECK_PRECISIONS:-$([[ $DEVICE == cuda ]] && echo "fp32 bf16" || echo fp32)}
for precision in $PRECISIONS; do
  echo "== benchmarks/throughput.py --preset $PRESET --device $DEVICE --precision $precision"
  timeout 300 "$PY" benchmarks/throughput.py --preset "$PRESET" --device "$DEVICE" --precision "$precision" \
      --json "$WORK/throughput-$precision.json" || status=1
done

"$PY" - "$WORK" "$DEVICE" <<'PYEOF'
import json, os, sys
work, device = sys.argv[1:3]
import torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
rows = [("machine", f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU {gpu}, device {device}")]
tests = open(os.path.join(work, "cuda_tests.txt")).read().strip().splitlines()
rows.append(("CUDA-only tests", tests[-1].strip("= ") if tests else "FAILED (no output)"))
try:
    q = json.load(open(os.path.join(work, "quickstart.json")))
    rows.append(("quickstart", f"{q['status']}, final accuracy {q['final_average_accuracy'] * 100:.2f}%, "
                               f"{q['samples_per_s']:.0f} samples/s, train time {q['train_time_s']:.1f} s"))
except (OSError, KeyError, ValueError) as e:
    rows.append(("quickstart", f"FAILED ({e})"))
import glob
try:
    from hpccl.core.logs import read_h5
    a = read_h5(os.path.join(work, "quickstart", "ranks", "rank00000.h5"))["attrs"]
    ctx = json.load(open(os.path.join(work, "context.json")))["context_bytes"]
    rows.append(("host memory", f"quickstart rank 0 peak PSS {a.get('peak_pss_bytes', 0) / 1e6:.0f} MB, "
                                f"RSS {a['peak_rss_bytes'] / 1e6:.0f} MB; a CUDA context with cuBLAS and "
                                f"cuDNN adds {ctx / 1e6:.0f} MB (estimate assumes 2000 MB)"))
except (OSError, KeyError, ValueError) as e:
    rows.append(("host memory", f"FAILED ({e})"))
results = sorted(glob.glob(os.path.join(work, "throughput-*.json")))
for path in results:
    try:
        t = json.load(open(path))
        for r in t["rows"]:
            rows.append((f"throughput {r['model']} {t['precision']}",
                         f"plain {r['plain']:.0f}/s, hpccl {r['hpccl']:.0f}/s ({r['hpccl'] / r['plain']:.3f}, goal 0.95), "
                         f"rehearsal b={t['b']} r={t['r']} {r['rehearsal']:.0f}/s "
                         f"({r['rehearsal'] / r['plain']:.3f}, goal {t['target_rehearsal']:.3f})"))
    except (OSError, KeyError, ValueError) as e:
        rows.append((f"throughput ({os.path.basename(path)})", f"FAILED ({e})"))
if not results:
    rows.append(("throughput", "FAILED (no result)"))
width = max(len(k) for k, _ in rows)
print("\n== gpu_check")
print("\n".join(f"| {k:<{width}} | {v} |" for k, v in rows))
PYEOF
exit $status
