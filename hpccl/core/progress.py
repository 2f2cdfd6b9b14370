"""Progress on rank 0: a tqdm bar when attached to a terminal, one quiet line per epoch
otherwise (batch logs stay readable). Other ranks stay silent."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, mode: str, enabled: bool, stream=sys.stderr):
        if mode == "auto":
            mode = "bar" if stream.isatty() else "lines"
        self.mode = mode if enabled else "off"
        self.stream = stream
        self._bar = None

    def start_epoch(self, desc: str, total: int):
        if self.mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, leave=False, file=self.stream, dynamic_ncols=True)

    def step(self, n: int = 1):
        if self._bar is not None:
            self._bar.update(n)

    def end_epoch(self, line: str):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.message(line)

    def message(self, line: str):
        if self.mode != "off":
            print(line, file=self.stream if self.mode == "bar" else sys.stdout, flush=True)
