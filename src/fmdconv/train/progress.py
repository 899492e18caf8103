"""A small progress bar for training and evaluation loops, drawn on stderr.

On a terminal the bar is redrawn in place (at most ten times a second); otherwise (a log file, a
pipe, CI) it prints one line each time another ``report_percent`` of the work is done, and a final
line, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 24
REDRAW_SECONDS = 0.1


def format_duration(seconds: float) -> str:
    """``seconds`` as ``m:ss`` or ``h:mm:ss``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressBar:
    """Shows ``done/total`` steps with loss, accuracy, images/s and the time left.

    Args:
        total: number of steps (batches) of the loop.
        description: text in front of the bar (for example ``"epoch 3/10"``).
        stream: where to draw; ``sys.stderr`` by default.
        enabled: draw nothing when False (non-zero DDP ranks, quiet runs).
        report_percent: without a terminal, print a line every this many percent.
    """

    def __init__(
        self,
        total: int,
        description: str,
        stream: TextIO | None = None,
        enabled: bool = True,
        report_percent: int = 25,
    ) -> None:
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total}")
        if not 0 < report_percent <= 100:
            raise ValueError(f"report_percent must be in (0, 100], got {report_percent}")
        self.total = total
        self.description = description
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.report_percent = report_percent
        self.interactive = enabled and self.stream.isatty()
        self.done = 0
        self.images = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._next_report = report_percent

    def line(self, stats: dict[str, float]) -> str:
        """The text of the bar for the current state and the given statistics."""
        elapsed = time.perf_counter() - self.start
        filled = BAR_WIDTH * self.done // self.total
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        rate = self.images / elapsed if elapsed > 0 else 0.0
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        shown = " ".join(f"{name} {value:.4g}" for name, value in stats.items())
        timing = f"{rate:.0f} img/s, {format_duration(elapsed)} elapsed, ETA {format_duration(left)}"
        return f"{self.description} [{bar}] {self.done}/{self.total} {shown} | {timing}"

    def update(self, images: int, **stats: float) -> None:
        """Record one finished step of ``images`` images, with running statistics to show."""
        self.done += 1
        self.images += images
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.interactive:
            if now - self._last_draw >= REDRAW_SECONDS or self.done == self.total:
                self._last_draw = now
                self.stream.write("\r\033[K" + self.line(stats))
                if self.done == self.total:
                    self.stream.write("\n")
                self.stream.flush()
        elif 100 * self.done >= self._next_report * self.total:
            self._next_report = (
                100 * self.done // self.total // self.report_percent + 1
            ) * self.report_percent
            self.stream.write(self.line(stats) + "\n")
            self.stream.flush()
