"""Domains for command-line flags, as the job schema has them for keys: every numeric flag of
every sub-command is parsed by ``integer`` or ``number`` with its bounds, so a value outside
them is refused by argparse ("argument --seed: expected an integer in [0, 4294967295], found
'-1'", exit 2) before any work starts, instead of a traceback or a nonsense result later.
The bounds are the ones the code behind the flag can meet: a seed numpy accepts, a rank count
a launcher can start, a fraction that leaves data on both sides."""

from __future__ import annotations

import argparse
import math

from hpccl.core.schema import Range

MAX_RANKS = 65536          # beyond the largest machines hpccl targets (1024 GPUs) by far
MAX_SEED = 2**32 - 1       # numpy's SeedSequence entropy per word


def integer(lo: int | None = None, hi: int | None = None, kind: str = "an integer"):
    """An argparse type: an integer in [lo, hi] (either bound may be None)."""
    expected = Range(lo=lo, hi=hi).describe(kind)

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if value not in Range(lo=lo, hi=hi):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
        return value
    parse.__name__ = "integer"           # argparse names the type in some messages
    return parse


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False, kind: str = "a number"):
    """An argparse type: a finite number within the bounds (open or closed)."""
    expected = Range(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open).describe(kind)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if not math.isfinite(value) or value not in Range(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
        return value
    parse.__name__ = "number"
    return parse


ranks = integer(1, MAX_RANKS, kind="a number of ranks")
MAX_SECONDS = 7 * 86400    # a week: longer waits and timeouts are mistakes, and time.sleep(1e300) overflows
seconds = number(0, MAX_SECONDS, lo_open=True, kind="a number of seconds")
seed = integer(0, MAX_SEED)


def integer_list(lo: int | None = None, hi: int | None = None, kind: str = "an integer"):
    """An argparse type: comma-separated integers, each in [lo, hi], none twice."""
    one = integer(lo, hi, kind)
    expected = f"a comma-separated list of {Range(lo=lo, hi=hi).describe(kind)}"

    def parse(text: str) -> list[int]:
        try:
            values = [one(t.strip()) for t in text.split(",")]
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"expected {expected}, each once, found {text!r}")
        return values
    parse.__name__ = "integer_list"
    return parse
