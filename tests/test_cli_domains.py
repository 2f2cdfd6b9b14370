"""Every numeric flag of every sub-command has a domain, as every key of the job schema has:
the parser tree is walked, so a flag added later with a bare ``type=int`` fails here, and each
flag is tried with values outside its domain (exit 2, one line naming the flag and the domain,
no traceback, nothing done)."""

import argparse
import math

import pytest

from hpccl.cli import build_parser, main
from hpccl.core.schema import Range


def flags(parser, prefix=()):
    """(command words, action) for every option of every sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from flags(sub, prefix + (name,))
        elif action.option_strings:
            yield prefix, action


ALL = list(flags(build_parser()))
NUMERIC = [(cmd, a) for cmd, a in ALL if getattr(a.type, "__name__", "") in ("int", "float", "integer", "number")]


def test_the_walk_sees_the_numeric_flags_of_every_command():
    seen = {(" ".join(cmd), a.option_strings[-1]) for cmd, a in NUMERIC}
    for expected in [("run", "--np"), ("check", "--busy-seconds"), ("model", "--global-batch"),
                     ("data convert digits", "--seed"), ("data convert synthetic", "--noise")]:
        assert expected in seen, sorted(seen)


@pytest.mark.parametrize("cmd, action", NUMERIC, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x.dest)
def test_every_numeric_flag_has_a_domain(cmd, action):
    assert action.type not in (int, float), (f"hpccl {' '.join(cmd)} {action.option_strings[-1]}: a bare "
                                             f"{action.type.__name__}; use hpccl.core.cli_args.integer/number")


def outside(action):
    """The domain the flag's type states, and values it must refuse: not a number, not finite,
    and one step past each bound the statement names."""
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        action.type("x")
    text = str(refused.value)
    bad, bounds = ["x", "1e999", "nan"], 0
    for token in text.translate(str.maketrans("[](),", "     ")).split():
        try:
            bound = float(token)
        except ValueError:
            continue
        if action.type.__name__ == "integer":
            bad += [str(int(bound) - 1), str(int(bound) + 1)]
        else:
            bad += [repr(bound - 1e-9), repr(bound + 1e-9)]
        bounds += 1
    return text, bad, bounds


@pytest.mark.parametrize("cmd, action", NUMERIC, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x.dest)
def test_values_outside_a_flags_domain_are_refused(cmd, action, capsys):
    text, candidates, bounds = outside(action)
    expected = text.split(", found")[0]
    refused = 0
    for value in candidates:
        try:
            parsed = action.type(value)
        except argparse.ArgumentTypeError:
            refused += 1
            continue
        # Accepted: then it lies inside the domain the message states.
        assert math.isfinite(parsed), (cmd, action.dest, value)
    # The three that are no numbers, and on each bound the side beyond it: a type that
    # checked fewer bounds than it states would accept one of them.
    assert bounds >= 1 and refused == 3 + bounds, (cmd, action.dest, candidates)
    # And through the real command line: exit 2, the flag and its domain named, no traceback.
    positional = {"run": ["jobs/quickstart.yaml"], "check": ["jobs/quickstart.yaml"], "model": ["RUN"],
                  "submit": ["jobs/quickstart.yaml"]}.get(cmd[0], [])
    with pytest.raises(SystemExit) as exit_:
        main([*cmd, *positional, action.option_strings[-1], candidates[0]])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {'/'.join(action.option_strings)}: {expected}" in err, err
    assert "Traceback" not in err


def test_range_describes_what_the_parser_checks():
    r = Range(lo=0, hi=1, lo_open=True, hi_open=True)
    assert 0.5 in r and 0 not in r and 1 not in r and r.describe("a number") == "a number in (0, 1)"
