"""hpccl model --engine analytical|simgrid|both and --plot, through the CLI, on run logs with
known timings (written with the real log writer, as in test_model_calibration): the engines'
rows side by side, a warning for each GPU count and term more than 25 % apart (the expectation
worked out here from the rows themselves), the component plot, and the refusals."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from analysis.test_model_calibration import GRAD, ITS, R, timed_run
from helpers import hpccl_cmd, run_cmd

if not shutil.which("smpirun"):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("CI=true but SimGrid's smpirun is missing: scripts/setup.sh installs libsimgrid-dev",
                    pytrace=False)
    pytest.skip("SimGrid's smpirun not installed (apt-get install libsimgrid-dev)", allow_module_level=True)

TERMS = ("iteration_s", "t_allreduce", "t_fetch", "rehearsal_exposed")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    # the 2-host run's draws cost 2 ms beyond copies and bytes: a per-owner term both engines
    # take; 12 KB records, so a draw's bytes take more of the link than that (R/2 x 12 KB at 6 MB/s)
    draw = R * 5e-6 + 0.002 + R / 2 * 12288 / 6e6
    return [timed_run(root / "one", world=1, shape="[3072]"),
            timed_run(root / "two", world=2, ar=0.0004 + GRAD / 6e6, fetch_s=ITS * draw, fetched=ITS * R,
                      shape="[3072]")]


def model(runs, *args, env=None):
    return run_cmd(hpccl_cmd("model", *runs, "--gpus", "1,2,4", "--gpus-per-node", "2", *args), env=env)


def apart(a, s):
    """(gpus, term) where the two rows differ by more than 25 % of the larger."""
    return {(x["gpus"], k) for x, y in zip(a, s) for k in TERMS
            if abs(x[k] - y[k]) > 0.25 * max(x[k], y[k], 0.0) and max(x[k], y[k]) > 0}


def flagged(text):
    found = (re.match(r"warning: engines disagree by more than 25 %: (\d+) GPUs: (\w+) ", line)
             for line in text.splitlines())
    return {(int(f.group(1)), f.group(2)) for f in found if f}


def test_both_engines_side_by_side_warn_where_they_differ_and_plot(runs, tmp_path):
    png = tmp_path / "model.png"
    r = model(runs, "--engine", "both", "--format", "json", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    pred = out["predictions"]
    assert out["engine"] == "both" and out["predicted"] == pred["analytical"]
    assert [x["gpus"] for x in pred["simgrid"]] == [1, 2, 4]
    assert {x.get("engine") for x in pred["simgrid"]} == {"simgrid"}
    # the same inputs: compute, data and step are the calibration's in both engines
    for a, s in zip(pred["analytical"], pred["simgrid"]):
        for k in ("t_compute", "t_data", "t_step", "t_other"):
            assert s[k] == pytest.approx(a[k])
    # one rank: no message, so the two engines add the very same terms (the handoff included)
    assert pred["simgrid"][0]["iteration_s"] == pytest.approx(pred["analytical"][0]["iteration_s"], rel=1e-5)
    expected = apart(pred["analytical"], pred["simgrid"])
    # async gets share the owner's link with the allreduce in the analytical t_fetch (half speed
    # while it runs); the replay's t_fetch is the gets alone: a difference the output has to show
    assert expected and flagged("\n".join(out["disagreements"])) == expected
    assert flagged(r.stderr) == expected
    # one simgrid run gives the same rows (the draws are seeded), its engine named
    r = model(runs, "--engine", "simgrid", "--format", "json")
    assert r.returncode == 0, r.stderr
    single = json.loads(r.stdout)
    assert single["engine"] == "simgrid" and not single["disagreements"]
    assert [x["iteration_s"] for x in single["predicted"]] == pytest.approx(
        [x["iteration_s"] for x in pred["simgrid"]], rel=1e-6)
    # text: an engine column, each GPU count's two rows together, the warnings on stderr
    r = model(runs, "--engine", "both")
    assert r.returncode == 0, r.stderr
    table = [line.split() for line in r.stdout.splitlines() if line.split()[:1] in (["analytical"], ["simgrid"])]
    assert [(t[0], int(t[1])) for t in table] == [(e, g) for g in (1, 2, 4) for e in ("analytical", "simgrid")]
    assert flagged(r.stderr) == expected
    # the figure: a panel per engine, each framed by a left and a right spine
    r = model(runs, "--plot", str(tmp_path / "one.png"))
    assert r.returncode == 0, r.stderr
    assert (spines(png), spines(tmp_path / "one.png")) == (4, 2)


def spines(png):
    """Vertical dark lines spanning over half the image's height: 2 per panel."""
    from matplotlib.image import imread
    img = imread(str(png))
    dark = (img[..., :3].mean(axis=2) < 0.35).mean(axis=0) > 0.5
    return int(np.count_nonzero(np.diff(dark.astype(int)) == 1) + dark[0])


def test_the_stack_adds_up_to_the_iteration(runs):
    from hpccl.analysis import engines, model as analytical
    m = analytical.calibrate(runs)
    rows = engines.predict_all("both", m, [1, 2, 4], 2, None, "weak", None, True, None)
    for row in rows["analytical"] + rows["simgrid"]:
        assert sum(engines.component_stack(row)) == pytest.approx(row["iteration_s"], rel=1e-9)


def test_refusals(runs, tmp_path):
    # the plot path is checked before any work: a run that is not there is not reached
    r = model([str(tmp_path / "missing")], "--plot", str(tmp_path / "model.pdf"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--plot" in r.stderr and ".png" in r.stderr
    (tmp_path / "file").write_text("")
    r = model(runs, "--plot", str(tmp_path / "file" / "m.png"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--plot" in r.stderr
    r = model(runs, "--engine", "simgrid", env={"PATH": "/nonexistent"})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "libsimgrid-dev" in r.stderr
    r = model(runs, "--engine", "all")
    assert r.returncode == 2 and "invalid choice" in r.stderr
