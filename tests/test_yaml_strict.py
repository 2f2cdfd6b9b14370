"""One strict YAML reader for job files, --set values and study files (site files: tests/sched):
a key written twice, nesting past the limit, a file that is not UTF-8 and a control character in
a string are each refused with one paragraph naming the file and what is wrong, exit 2."""

import time

import pytest

from hpccl.cli import main
from hpccl.core.schema import MAX_DEPTH, YamlInputError, load_yaml

from helpers import write_job


def validate(capsys, *args):
    code = main(["validate", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def job(tmp_path):
    return write_job(tmp_path / "job.yaml")


def raw_job(tmp_path, data: bytes):
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("data, key, lines", [
    (b"name: first\nseed: 0\nname: second\n", "name", (1, 3)),
    (b"name: x\ntrain:\n  lr: 0.1\n  epochs: 1\n  lr: 0.2\n", "lr", (3, 5)),
    (b"name: x\n'seed': 0\nseed: 1\n", "seed", (2, 3)),        # quoted or not, one key
])
def test_a_key_written_twice_is_refused_with_both_lines(tmp_path, capsys, data, key, lines):
    path = raw_job(tmp_path, data)
    code, err = validate(capsys, path)
    assert code == 2
    assert f"{path}: key '{key}' is written twice in one mapping, on line {lines[0]} and line {lines[1]}" in err, err


def test_merge_keys_may_override_what_they_merge():
    assert load_yaml("base: &b {lr: 0.1, epochs: 2}\ntrain:\n  <<: *b\n  lr: 0.2\n")["train"] == \
        {"lr": 0.2, "epochs": 2}


@pytest.mark.parametrize("text", ["a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
                                  "a: " + "[" * 2000 + "]" * 2000,
                                  "".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * 70 + "x: 1\n"])
def test_nesting_beyond_the_limit_is_refused_not_a_recursion_error(tmp_path, capsys, text):
    code, err = validate(capsys, raw_job(tmp_path, text.encode()))
    assert code == 2 and f"nesting deeper than {MAX_DEPTH} levels" in err, err


def test_nesting_up_to_the_limit_is_read():
    depth = MAX_DEPTH - 2          # the top mapping, the lists, the scalar: MAX_DEPTH nodes
    value = load_yaml("a: " + "[" * depth + "1" + "]" * depth)
    for _ in range(depth + 1):          # into "a", then through every list
        value = value["a"] if isinstance(value, dict) else value[0]
    assert value == 1


@pytest.mark.parametrize("data, named", [
    ("name: café\n".encode("latin-1"), "not UTF-8 text: byte 0xe9 on line 1, column 10"),
    ("seed: 0\nname: x\n".encode("utf-16"), "UTF-16 text"),
    ("seed: 0\n".encode("utf-32"), "UTF-32 text"),
])
def test_a_file_that_is_not_utf8_is_named(tmp_path, capsys, data, named):
    path = raw_job(tmp_path, data)
    code, err = validate(capsys, path)
    assert code == 2 and f"{path}: the file is" in err and named in err and "iconv" in err, err


def test_a_utf8_byte_order_mark_is_accepted(tmp_path, capsys, job):
    with open(job, "rb") as f:
        data = f.read()
    code, err = validate(capsys, raw_job(tmp_path, b"\xef\xbb\xbf" + data))
    assert code == 0, err


@pytest.mark.parametrize("escaped, char", [("\\0", "\\x00"), ("\\e", "\\x1b"), ("\\r", "\\r"),
                                           ("\\x7f", "\\x7f"), ("\\x01", "\\x01")])
def test_a_control_character_in_a_string_is_refused_with_its_key(tmp_path, capsys, escaped, char):
    path = raw_job(tmp_path, f'name: x\nlog:\n  dir: "/tmp/a{escaped}b"\n'.encode())
    code, err = validate(capsys, path)
    assert code == 2 and f"{path}: key 'log.dir'" in err and f"control character '{char}'" in err, err


def test_control_characters_in_keys_and_lists_are_refused_too():
    with pytest.raises(YamlInputError, match=r"key 'a\[1\]'"):
        load_yaml('a: [ok, "x\\0"]')
    with pytest.raises(YamlInputError, match="control character"):
        load_yaml('"k\\x02": 1')


@pytest.mark.parametrize("value, said", [("name=a\x01b", "control character"),
                                         ("train={lr: 1, lr: 2}", "written twice"),
                                         ("train=" + "[" * 600 + "]" * 600, "nesting deeper")])
def test_set_values_are_held_to_the_same_rules(capsys, job, value, said):
    code, err = validate(capsys, job, "--set", value)
    assert code == 2 and f"--set {value[:20]!r}"[:26] in err and said in err, err


def test_aliases_are_walked_once_each_not_expanded():
    """A 'billion laughs' document: 30 levels of doubling aliases. The control-character walk
    visits each shared list once, so it ends at once instead of after 2^30 visits."""
    lines = ["l0: [a, a]"] + [f"l{i}: [*l{i - 1}, *l{i - 1}]" for i in range(1, 31)]
    text = "\n".join(line.replace("l0: [a, a]", "l0: &l0 [a, a]") if i == 0 else
                     line.replace(f"l{i}: [", f"l{i}: &l{i} [") for i, line in enumerate(lines))
    t0 = time.process_time()
    load_yaml(text)
    assert time.process_time() - t0 < 5        # CPU time, not wall: 2^30 visits take minutes


def test_a_study_file_is_read_as_strictly(tmp_path):
    from hpccl.alma.study import load_study
    from hpccl.core.errors import ConfigError
    path = tmp_path / "study.yaml"
    path.write_bytes(b"job: a.yaml\njob: b.yaml\nstudies: {}\n")
    with pytest.raises(ConfigError, match=r"study.yaml: key 'job' is written twice.*line 1 and line 2"):
        load_study(str(path))
    path.write_bytes(b"job: [\n")
    with pytest.raises(ConfigError, match="study.yaml: not valid YAML"):
        load_study(str(path))


@pytest.mark.parametrize("data, said", [(b"scheduler: slurm\nscheduler: pbs\n", "key 'scheduler' is written twice"),
                                        ("description: café\n".encode("latin-1"), "not UTF-8 text: byte 0xe9"),
                                        (b'description: "a\\0b"\n', "control character")])
def test_a_site_file_is_read_as_strictly(tmp_path, capsys, monkeypatch, job, data, said):
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "strict.yaml").write_bytes(data)
    monkeypatch.setenv("HPCCL_SITE_DIR", str(sites))
    code = main(["submit", job, "--site", "strict", "--gpus", "1", "--dry-run", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and f"{sites / 'strict.yaml'}: " in err and said in err and "Traceback" not in err, err
    assert "not valid YAML" not in err


def test_an_unquoted_time_stays_a_time_not_base_60_seconds(tmp_path, capsys, monkeypatch, job):
    """YAML 1.1 reads 1:30:00 as 5400 (base 60): an unquoted walltime was refused as
    'expected a string, found 5400'. As in YAML 1.2 it stays the text it looks like."""
    assert load_yaml("t: 1:30:00\nf: 1:30.5\nn: 12\nx: 1e-3") == {"t": "1:30:00", "f": "1:30.5", "n": 12, "x": 0.001}
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "unquoted.yaml").write_text("extends: local\ndefault_walltime: 1:30:00\n")
    monkeypatch.setenv("HPCCL_SITE_DIR", str(sites))
    out = tmp_path / "run"
    code = main(["submit", job, "--site", "unquoted", "--gpus", "1", "--dry-run", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "walltime 01:30:00" in (out / "job.sh").read_text()
