"""A live progress line for long fits: iteration and objective, on a terminal only.

``verbose=None`` (default) shows the line only when stderr is a terminal and the fit
has run for more than ``delay`` seconds; ``True`` always, ``False`` never.
"""
from __future__ import annotations

import sys
import time


class Progress:
    """Throttled one-line progress display on stderr."""

    def __init__(self, verbose=None, label="fit", delay=2.0, stream=None):
        self.stream = stream or sys.stderr
        if verbose is None:
            isatty = getattr(self.stream, "isatty", lambda: False)
            self.enabled = bool(isatty())
            self.delay = delay
        else:
            self.enabled = bool(verbose)
            self.delay = 0.0
        self.label = label
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.shown = False

    def update(self, iteration: int, objective: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter() - self.t0
        if now < self.delay or (now - self._last < 0.1 and self.shown):
            return
        self._last = now
        self.shown = True
        self.stream.write(f"\r{self.label}: evaluation {iteration:5d}  objective {objective:.10g}"
                          f"  ({now:.1f} s)")
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
