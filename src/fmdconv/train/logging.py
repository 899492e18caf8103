"""Metrics of a run written as JSON lines and as TensorBoard scalars.

Each record is a flat dict with at least ``kind`` (``"step"`` for a training-iteration sample,
``"epoch"`` for an epoch summary) and ``iteration`` (optimizer steps taken so far, the TensorBoard
step). Numeric fields other than ``iteration`` and ``epoch`` become scalars named
``<kind>/<field>``. When a run resumes from a checkpoint at iteration t, records after t (written
by the part of an epoch that was lost) are removed from both outputs, so the logs read like an
uninterrupted run.

The file is appended to in place, one line per record; a last line cut short by a crash (no newline,
not valid JSON) is a partial record and is dropped when the file is read. Non-finite numbers (a NaN
or infinite gradient norm) are written as ``null``, so every line is valid JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fmdconv.utils.io import dumps_json, write_text_atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
STEP_RECORDS_PER_EPOCH = 10


def is_logged_step(step: int, steps: int) -> bool:
    """Whether step ``step`` (from 1) of an epoch of ``steps`` writes a step record.

    Evenly spaced, ending at the epoch's last step: exactly ``min(STEP_RECORDS_PER_EPOCH, steps)``.
    """
    return step * STEP_RECORDS_PER_EPOCH // steps > (step - 1) * STEP_RECORDS_PER_EPOCH // steps


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order; a truncated last line is dropped.

    Raises:
        ValueError: a line other than an unterminated last one is not a JSON record with
            ``kind`` and ``iteration``; the message names the file and the line.
    """
    text = Path(path).read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: a record cut short by a crash
                break
            raise ValueError(f"{path}, line {number}: not a JSON record ({error.msg})") from None
        if not isinstance(record, dict) or not {"kind", "iteration"} <= record.keys():
            raise ValueError(
                f"{path}, line {number}: not a metrics record (a JSON object with 'kind' and "
                "'iteration'); is this folder an fmdconv run?"
            )
        records.append(record)
    return records


class MetricsLogger:
    """Appends records to ``out_dir/metrics.jsonl`` and ``out_dir/tensorboard/``.

    Args:
        out_dir: the run's folder.
        enabled: write nothing when False (non-zero DDP ranks).
        tensorboard: also write TensorBoard event files.
        resume_iteration: the iteration the run resumes from; later records are dropped.
    """

    def __init__(
        self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True, resume_iteration: int = 0
    ) -> None:
        self.path = Path(out_dir) / METRICS_FILE
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [r for r in read_metrics(self.path) if r["iteration"] <= resume_iteration]
            write_text_atomic(self.path, "".join(dumps_json(r) + "\n" for r in kept))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

            self.writer = SummaryWriter(
                str(Path(out_dir) / TENSORBOARD_DIR),
                purge_step=resume_iteration + 1 if resume_iteration else None,
            )

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (it must have ``kind`` and ``iteration``)."""
        if not self.enabled:
            return
        with open(self.path, "a") as stream:
            stream.write(dumps_json(record) + "\n")
        if self.writer is not None:
            for name, value in record.items():
                numeric = isinstance(value, int | float) and not isinstance(value, bool)
                if numeric and name not in ("iteration", "epoch") and math.isfinite(value):
                    self.writer.add_scalar(f"{record['kind']}/{name}", value, record["iteration"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
