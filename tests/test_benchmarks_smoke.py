"""The benchmark commands of docs/benchmarks.md (the block under "Benchmarks live in
`benchmarks/`"), each run as written with --smoke appended: a benchmark that stops importing, a
line there naming a flag or part that no longer exists, or a table that loses its rows fails
the suite instead of a user. Every check reads the table the full run prints (or the JSON beside
it) and asserts what a broken benchmark would get wrong: every row there, numbers finite and
positive, each ratio the quotient of the numbers printed beside it, so its baseline was measured
in the same run; the rank count the page names reached the ranks.

Every file in benchmarks/ must have a line on the page, and every line a check here, or a
reason it runs elsewhere (EXCLUDED): a new benchmark cannot stay out of the suite unseen."""

import json
import math
import os
import re
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import ROOT, run_cmd

BENCHMARKS_PAGE = os.path.join(ROOT, "docs", "benchmarks.md")
EXCLUDED = {
    "scripts/gpu_check.sh": "needs a GPU (its CPU dry run takes minutes)",
    "benchmarks/cluster_bench.py": "needs root and the multi-host test bed: "
                                   "tests/cluster/test_cluster_bench.py runs it with --smoke",
    "benchmarks/model_validation.py": "needs root and the multi-host test bed: "
                                      "tests/cluster/test_model_validation.py runs its 3-host prediction",
}


def readme_commands() -> list[str]:
    """The commands of the benchmark block of docs/benchmarks.md, comments stripped."""
    with open(BENCHMARKS_PAGE) as f:
        text = f.read()
    start = text.index("```bash", text.index("Benchmarks live in `benchmarks/`")) + len("```bash")
    block = text[start:text.index("```", start)]
    return [ln.split("#", 1)[0].strip() for ln in block.splitlines() if ln.split("#", 1)[0].strip()]


def script_of(command: str) -> str:
    argv = shlex.split(command)
    return argv[1] if argv[0] == ".venv/bin/python" else argv[0]


def key_of(command: str) -> str:
    """The script and its --part, which pick the check."""
    argv = shlex.split(command)
    part = argv[argv.index("--part") + 1] if "--part" in argv else ""
    return script_of(command) + (f" --part {part}" if part else "")


def smoke_ranks(argv, default=2) -> int:
    """The ranks a command asks for with -n, or the benchmark's smoke default."""
    return int(argv[argv.index("-n") + 1]) if "-n" in argv else default


def floats(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*\.?\d*(?:e[-+]\d+)?", text)]


def finite_positive(*values):
    for v in values:
        assert math.isfinite(v) and v > 0, values


def half(decimals: int, value: float = 0.0, sci: bool = False) -> float:
    """Half a unit in the last place of VALUE printed with DECIMALS decimals (sci: mantissa's)."""
    return 0.5 * 10 ** -decimals * (10 ** math.floor(math.log10(abs(value))) if sci else 1)


def quotient(printed: float, num: float, den: float, h_num=0.0, h_den=0.0, h_ratio=0.0):
    """A printed ratio is num / den, each rounded by at most its half-width h: it lies in the
    interval their rounding allows."""
    assert den - h_den > 0, (num, den)
    lo, hi = (num - h_num) / (den + h_den), (num + h_num) / (den - h_den)
    assert lo - h_ratio - 1e-9 <= printed <= hi + h_ratio + 1e-9, (printed, num, den, lo, hi)


def rows_after(stdout: str, header: str) -> list[str]:
    """The lines of the table whose header line contains HEADER, up to the next blank or
    non-table line."""
    lines = stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if header in ln)
    out = []
    for ln in lines[i + 1:]:
        if not ln.strip() or ln.startswith(("{", "[")):
            break
        if not set(ln.strip()) <= set("-"):
            out.append(ln)
    return out


def json_lines(stdout: str, opener: str) -> list:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.startswith(opener)]


# -- one check per documented command: (extra arguments, check(stdout, argv, tmp_path)) ------------
def check_allreduce(out, argv, tmp):
    ranks = smoke_ranks(argv, 1)          # without -n: one rank, no mpirun
    assert re.search(rf"allreduce of 10,000 float32 .* on {ranks} ranks", out), out
    rows = {ln[:28].strip(): floats(ln[28:]) for ln in rows_after(out, "ratio to MPI")}
    assert list(rows) == ["MPI.Allreduce (baseline)", "horovod.allreduce", "torch.distributed (gloo)",
                          "hpccl mpi backend"], out
    base = rows["MPI.Allreduce (baseline)"][0]
    for name, (ms, _algbw, ratio) in rows.items():
        finite_positive(ms)
        quotient(ratio, ms, base, half(2), half(2), half(2))
    assert rows["MPI.Allreduce (baseline)"][2] == 1.0


def check_throughput(out, argv, tmp):
    res = json.loads((tmp / "bench.json").read_text())
    assert [r["model"] for r in res["rows"]] == ["resnet18 16x16", "resnet50 16x16"], res
    printed = {ln[:20].strip(): floats(ln[20:]) for ln in rows_after(out, "  rehearsal   ratio")}
    assert list(printed) == ["resnet18 16x16", "resnet50 16x16"], out
    for row in res["rows"]:
        finite_positive(row["plain"], row["hpccl"], row["rehearsal"])
        _plain, _hpccl, hpccl_ratio, _reh, reh_ratio = printed[row["model"]]
        quotient(hpccl_ratio, row["hpccl"], row["plain"], h_ratio=half(3))
        quotient(reh_ratio, row["rehearsal"], row["plain"], h_ratio=half(3))
    assert res["b"] == 4 and res["r"] == 2 and res["target_rehearsal"] == pytest.approx(0.95 * 4 / 6)


def check_rehearsal(out, argv, tmp):
    (sampling,) = [x for x in json_lines(out, "[{") if x and "path" in x[0]]
    assert sorted((x["path"], x["ranks"], x["r"]) for x in sampling) == [("remote", 2, 7), ("shared", 2, 7)]
    for x in sampling:
        finite_positive(x["sampling_MBps"], x["gather_MBps"], x["draws_per_s_rank"])
        assert x["ratio"] == pytest.approx(x["sampling_MBps"] / x["gather_MBps"]), x
    shared, remote = sorted(sampling, key=lambda x: x["path"] != "shared")
    assert shared["rma_ops_per_draw"] == 0 and shared["remote_records_per_draw"] == 0, shared   # loads
    assert remote["remote_records_per_draw"] > 0 and remote["rma_ops_per_draw"] > 0, remote    # gets
    assert len(rows_after(out, "draws/s/rank")) == 2, out
    (training,) = [x for x in json_lines(out, "[[") if x and x[0][2] == "incremental"]
    assert [(s, lay, lab) for s, lay, lab, *_ in training] == [
        ("openmpi", "2 x 1", "incremental"), ("openmpi", "2 x 1", "rehearsal async"),
        ("openmpi", "2 x 1", "rehearsal sync")], training
    base = training[0][3]
    for _s, _lay, label, best, median, ratio, wait in training:
        finite_positive(best, median)
        assert best <= median and ratio == pytest.approx(best / base), training
        assert 0 <= wait < 1, training
    assert training[0][6] == 0, training           # incremental: no buffer, nothing to wait for
    assert len(rows_after(out, "x incremental")) == 3, out


def check_rehearsal_remote(out, argv, tmp):
    # the draw's promises: one round, at most (records on other nodes) + 2 remote operations,
    # bytes within 1.05x of the payload
    assert "raw get MB/s" in out and "rma/raw" in out, out
    (stack,) = json.loads((tmp / "bench.json").read_text())["local"]
    (row,) = stack["rows"]
    for key in ("raw_MBps", "rma_MBps", "messages_MBps", "gather_MBps"):
        assert row[key] > 0, row
    rma, msg = row["rma"], row["messages"]
    # 2 ranks, r = 7: about half of each draw lies on the other rank's node
    assert 1.5 < rma["remote_records"] < 5.5, rma
    assert rma["rounds"] == 1.0 and msg["rounds"] == 1.0, row       # a whole record never tears here
    assert rma["ops"] <= rma["remote_records"] + 2, rma
    assert msg["ops"] == 1.0, msg                  # one request to the one other owner
    assert rma["bytes_per_payload"] <= 1.05, rma
    (line,) = rows_after(out, "rma/raw")
    assert line.split()[:3] == ["3KB", "2", "7"], line
    quotient(float(line.split()[7]), row["rma_MBps"], row["raw_MBps"], h_ratio=half(2))     # rma/raw


def check_erm(out, argv, tmp):
    assert "mode=smoke" in out and ("grid=(1,)" in out) == ("--quick" in argv), out
    sections = re.split(r"\n## ", out)[1:]
    names = [s.split(":", 1)[0] for s in sections]
    # the LIBSVM reader's branch (the one that rotted) runs on a file of its own
    assert names == ["breast_cancer", "libsvm_smoke", "Paper claim"], names
    for sec in sections[:2]:
        assert math.isfinite(float(re.search(r"P\*=(\S+) ", sec).group(1))), sec
        rows = {ln[:19].strip(): ln for ln in rows_after(sec, "passes/DASVRDA's") if ln.count("|") == 5}
        assert {"DASVRDA", "Katyusha", "SVRG", "sklearn saga (b=1)"} <= set(rows), sec
        cells = rows["DASVRDA"].split("|")
        passes = floats(cells[1])[0]              # DASVRDA reaches 1e-4 within the smoke caps
        finite_positive(passes)
        assert floats(cells[4])[0] == 1.0, rows["DASVRDA"]
        for label, ln in rows.items():            # a ratio = that row's passes / DASVRDA's
            cells = ln.split("|")
            if cells[1].strip() != "-" and cells[4].split()[0] != "-":
                quotient(floats(cells[4])[0], floats(cells[1])[0], passes, half(1), half(1), half(2))
        assert len(rows_after(sec, "mini-batch sweep")) == 4, sec
    assert "\nbreast_cancer:\n" in out and "\nlibsvm_smoke:\n" in out, out


def check_rtrl(out, argv, tmp):
    cost = rows_after(out, "MAC/step dense")
    assert [ln.split()[:2] for ln in cost] == [["8", "0.00"], ["8", "0.80"]], out
    for ln in cost:
        v = floats(ln)
        mac_dense, mac_sparse, ratio = v[6], v[7], v[8]
        finite_positive(mac_dense, mac_sparse, ratio, *v[13:])
        quotient(ratio, mac_sparse, mac_dense, half(3, mac_sparse, True), half(3, mac_dense, True), half(4))
    assert re.search(r"MAC ratio within 1\.5x of rel\*d\^2: \d/2 configs", out), out
    memory = rows_after(out, "BPTT/sparse")
    assert [ln.split()[:3] for ln in memory] == [["8", "0.00", "17"], ["8", "0.90", "17"]], out
    for ln in memory:
        v = floats(ln)
        finite_positive(*v[3:])
        quotient(v[7], v[5], v[4], h_ratio=half(3))        # BPTT stored / sparse influence matrix


def check_alma(out, argv, tmp):
    (res,) = json_lines(out, "{")
    assert res["ranks"] == smoke_ranks(argv) and res["members"] == 2, res
    finite_positive(res["one_group_s"], res["groups_s"])
    assert res["speedup"] == pytest.approx(res["one_group_s"] / res["groups_s"]), res
    rows = {ln.split("train time")[0].strip(): ln for ln in out.splitlines() if "train time" in ln}
    assert list(rows) == ["one group", "2 groups"], out
    flops = [float(re.search(r"train FLOPs (\S+)", ln).group(1)) for ln in rows.values()]
    # equal work in both layouts (the benchmark's premise), up to the batches each rank rounds
    assert flops[1] == pytest.approx(flops[0], rel=0.1), flops
    assert f"{res['speedup']:.2f}x" in out


def check_checkpoint_stall(out, argv, tmp):
    rows = {ln.split()[0]: floats(ln[6:]) for ln in rows_after(out, "stall ms (median)")
            if not ln.startswith("stall ")}
    assert list(rows) == ["async", "sync"], out
    assert rows["async"][0] == rows["sync"][0] >= 2, rows        # a checkpoint every epoch, both runs
    for count, stall, write, x_base, mib0, mib_other in rows.values():
        finite_positive(stall, write, x_base, mib0, mib_other)
    async_sync = float(re.search(r"stall async / sync: (\S+)", out).group(1))
    quotient(async_sync, rows["async"][1], rows["sync"][1], half(2), half(2), half(3))
    assert "baseline (no checkpoints) training time" in out and f"on {smoke_ranks(argv)} ranks" in out, out


def check_checkpoint_recovery(out, argv, tmp):
    rows = [ln for ln in out.splitlines() if "status" in ln]
    n = smoke_ranks(argv)
    assert [ln.split("  ")[1].strip() for ln in rows] == [
        f"uninterrupted, {n} ranks", f"rank {n - 1} SIGKILLed in task 1, resumed on {n}",
        f"rank {n - 1} SIGKILLed in task 1, resumed on {max(1, n // 2)}"], out
    for ln in rows:
        assert ln.endswith("status complete"), ln
        acc = float(re.search(r"([\d.]+)%", ln).group(1))
        assert 10 < acc <= 100, ln                 # 10 digit classes: above chance


def check_log(out, argv, tmp):
    rows = [floats(ln) for ln in rows_after(out, "append ms")]
    # 20 epochs of 20 rows, reported at epochs 2, 6 and 20, each report 4 more flushes
    assert [(int(r[0]), int(r[1])) for r in rows] == [(2, 120), (6, 280), (20, 640)], out
    for epoch, _rows, append, rewrite, ratio, _mb in rows:
        finite_positive(append, rewrite)
        quotient(ratio, append, rewrite, half(2), half(2), half(3))


CHECKS = {
    "benchmarks/allreduce_bench.py": ([], check_allreduce),
    "benchmarks/throughput.py": (["--json", "{tmp}/bench.json"], check_throughput),
    "benchmarks/rehearsal_bench.py": ([], check_rehearsal),
    "benchmarks/rehearsal_bench.py --part remote": (["--json", "{tmp}/bench.json"], check_rehearsal_remote),
    "benchmarks/erm_bench.py": ([], check_erm),
    "benchmarks/rtrl_bench.py": ([], check_rtrl),
    "benchmarks/alma_bench.py": ([], check_alma),
    "benchmarks/checkpoint_bench.py --part stall": ([], check_checkpoint_stall),
    "benchmarks/checkpoint_bench.py --part recovery": ([], check_checkpoint_recovery),
    "benchmarks/log_bench.py": ([], check_log),
}
COMMANDS = [c for c in readme_commands() if script_of(c) not in EXCLUDED]


def test_every_benchmark_has_a_readme_command_and_every_command_a_check():
    commands = readme_commands()
    scripts = {script_of(c) for c in commands}
    on_disk = {f"benchmarks/{f}" for f in os.listdir(os.path.join(ROOT, "benchmarks")) if f.endswith(".py")}
    assert on_disk <= scripts, f"benchmarks without a command in docs/benchmarks.md: {sorted(on_disk - scripts)}"
    assert set(EXCLUDED) <= scripts, sorted(set(EXCLUDED) - scripts)
    for c in commands:
        assert os.path.isfile(os.path.join(ROOT, script_of(c))), c
        assert script_of(c) in EXCLUDED or key_of(c) in CHECKS, f"no smoke check for docs/benchmarks.md's {c!r}"
    assert {key_of(c) for c in COMMANDS} == set(CHECKS), "a check for a command docs/benchmarks.md no longer has"


def run_smoke(command, tmp):
    argv = shlex.split(command)
    extra, _check = CHECKS[key_of(command)]
    return run_cmd([sys.executable, *argv[1:], "--smoke", *(a.format(tmp=tmp) for a in extra)], timeout=480)


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory):
    """The selected commands, two at a time, in the page's order: the benchmarks spend much of
    their time starting processes and waiting on them, so two keep both cores busy."""
    selected = [item.callspec.params["command"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {}
        for command in selected:
            tmp = tmp_path_factory.mktemp("bench")
            runs[command] = (tmp, pool.submit(run_smoke, command, tmp))
        yield runs


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(shlex.split(c)[1:]) for c in COMMANDS])
def test_readme_benchmark_command_smoke(command, smoke_runs):
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/python", command       # the page's interpreter, run as this one
    tmp, run = smoke_runs[command]
    r = run.result()
    assert r.returncode == 0, f"{command} --smoke: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    CHECKS[key_of(command)][1](r.stdout, argv, tmp)
