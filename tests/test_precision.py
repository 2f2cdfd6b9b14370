"""train.precision: bf16 and fp16 (autocast; fp16 with a gradient scaler) train to what fp32
does, on every gradient backend and with gradient clipping. On CPU here; the same code path
runs on CUDA (scripts/gpu_check.sh)."""

import numpy as np
import pytest

from helpers import hpccl_cmd, run_cmd, write_job
from hpccl.core.logs import read_h5

# One task of all ten digits: plain supervised training, so accuracy is meaningful.
SECTIONS = dict(scenario={"num_tasks": 1}, train={"epochs": 4, "batch_size": 32, "lr": 0.05})


def _run(tmp_path, name, np_, *sets):
    job = write_job(tmp_path / f"{name}.yaml", **SECTIONS)
    out = tmp_path / name
    r = run_cmd(hpccl_cmd("run", job, "-n", str(np_), "--out", str(out),
                          *[x for s in sets for x in ("--set", s)]), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    return read_h5(str(out / "log.h5"))


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("fp32"), "fp32", 1)


def test_bf16_matches_fp32_on_digits(tmp_path, fp32):
    """Tolerance: bf16 keeps 8 mantissa bits, so per-epoch losses drift a little; the final
    accuracy stays within 3 points and every epoch's loss within 10%."""
    bf16 = _run(tmp_path, "bf16", 1, "train.precision=bf16")
    assert fp32["eval/top1"][0, 0] > 0.85
    assert abs(bf16["eval/top1"][0, 0] - fp32["eval/top1"][0, 0]) <= 0.03
    np.testing.assert_allclose(bf16["epochs/loss"], fp32["epochs/loss"], rtol=0.10)
    assert not np.array_equal(bf16["epochs/loss"], fp32["epochs/loss"])   # it did run in bf16


@pytest.mark.parametrize("backend", ["torch", "horovod", "mpi"])
def test_fp16_with_clipping_trains_on_every_backend(tmp_path, fp32, backend):
    log = _run(tmp_path, f"fp16-{backend}", 2, "train.precision=fp16", "train.grad_clip_norm=5",
               f"runtime.backend={backend}")
    assert np.isfinite(log["epochs/loss"]).all()
    assert log["eval/top1"][0, 0] > 0.85 and abs(log["eval/top1"][0, 0] - fp32["eval/top1"][0, 0]) <= 0.05
