"""The published predictions (README.md, docs/scaling.md) are what the model computes now from
benchmarks/published/resnet50_a100_amp.yaml and the site files: scripts/predictions.py
regenerates them and compares, so a change of a formula, a site number or a baseline term
that moves a published number fails here until the tables are rewritten (--write). And
`hpccl model --baseline-file` gives the same rows, names each term's source, and refuses a
bad file with one paragraph (exit 2)."""

import json
import os
import sys

import pytest
import yaml

from helpers import ROOT, hpccl_cmd, run_cmd

SCRIPT = os.path.join(ROOT, "scripts", "predictions.py")
BASELINE = os.path.join(ROOT, "benchmarks", "published", "resnet50_a100_amp.yaml")


def test_the_published_tables_are_the_models():
    r = run_cmd([sys.executable, SCRIPT, "--check"], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # the check compares something: every block is there and holds a table
    printed = run_cmd([sys.executable, SCRIPT], timeout=60).stdout
    for name in ("readme", "site", "sensitivity", "seed"):
        assert f"## {name}\n\n| " in printed or f"## {name}\n\nthetagpu" in printed
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "<!-- predictions:readme -->\n| GPUs |" in readme
    assert readme.count("\n| 1024 |") == 1


def test_a_stale_table_is_found(tmp_path):
    # the same check on a copy whose README table has one number changed
    for rel in ("README.md", "docs/scaling.md"):
        os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            (tmp_path / rel).write_text(f.read())
    text = (tmp_path / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 64 |"))
    (tmp_path / "README.md").write_text(text.replace(row, row.replace(" | ", " | 9", 1)))
    code = ("import runpy; "
            f"g = runpy.run_path({SCRIPT!r}); pub = g['published']({str(tmp_path)!r}); "
            "t = g['render'](); print(sorted(n for n in t if pub[n] != t[n]))")
    r = run_cmd([sys.executable, "-c", code], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['readme']"


def test_hpccl_model_reads_the_baseline_file():
    r = run_cmd(hpccl_cmd("model", "--baseline-file", BASELINE, "--site", "site_configs/thetagpu.yaml",
                          "--gpus", "1,8,16,1024", "--format", "json"), timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    with open(BASELINE, encoding="utf-8") as f:
        terms = yaml.safe_load(f)["terms"]
    assert out["sources"]["compute_s_per_sample"] == terms["compute_s_per_sample"]["source"]
    assert out["sources"]["other_s"] == "not given: 0"
    rows = {row["gpus"]: row for row in out["predicted"]}
    k = terms["compute_s_per_sample"]["value"]
    b, rep = terms["batch"]["value"], terms["representatives"]["value"]
    assert rows[1]["iteration_s"] == pytest.approx((b + rep) * k)     # 1 GPU: compute alone
    # the gradient crosses nodes at 16 GPUs (8 per node): NCCL's tree, 2 G / B + 2 log2(p) a
    g = terms["gradient_bytes"]["value"]
    assert rows[1024]["allreduce_algorithm"] == "tree"
    assert rows[1024]["t_allreduce"] == pytest.approx(2 * g / 90e9 + 2 * 10 * 10e-6)
    assert rows[8]["t_allreduce"] < rows[16]["t_allreduce"]            # NVSwitch inside the node


def test_the_text_output_names_the_baseline_file(capsys):
    from hpccl.cli import main
    assert main(["model", "--baseline-file", BASELINE, "--site", "site_configs/polaris.yaml", "--gpus", "1,8"]) == 0
    head = capsys.readouterr().out.splitlines()
    assert head[0].startswith(f"weak scaling predicted (analytical) from {BASELINE} (cuda, horovod backend)")
    assert head[1].startswith("terms from: compute_s_per_sample <- NVIDIA DeepLearningExamples")


def _bad(tmp_path, name, edit):
    with open(BASELINE, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    edit(doc)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("name, edit, says", [
    ("missing", lambda d: d["terms"].pop("fetch_s_per_rep"), "missing term(s) fetch_s_per_rep"),
    ("unknown", lambda d: d["terms"].update(compute_per_sample={"value": 1, "source": "x"}),
     "unknown term(s) 'compute_per_sample'"),
    ("text", lambda d: d["terms"]["gradient_bytes"].update(value="102 MB"), "term 'gradient_bytes' has value '102 MB'"),
    ("fraction", lambda d: d["terms"]["batch"].update(value=56.5), "(a whole number)"),
    ("nosource", lambda d: d["terms"]["sample_bytes"].pop("source"), "term 'sample_bytes' has no 'source'"),
    ("device", lambda d: d.update(device="tpu"), "'device' is 'tpu'"),
])
def test_a_bad_baseline_file_is_refused_in_one_paragraph(tmp_path, capsys, name, edit, says):
    from hpccl.cli import main
    path = _bad(tmp_path, name, edit)
    assert main(["model", "--baseline-file", path, "--site", "site_configs/polaris.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpccl: error: baseline file {path!r}: ") and says in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def test_runs_and_a_baseline_file_together_are_refused(capsys):
    from hpccl.cli import main
    assert main(["model", "runs/x", "--baseline-file", BASELINE]) == 2
    assert "measured runs or --baseline-file, not both" in capsys.readouterr().err
    assert main(["model", "--baseline-file", "no/such.yaml"]) == 2
    assert "'no/such.yaml' does not exist" in capsys.readouterr().err
