"""Speed-accuracy scores (FMDConv paper) and top-k accuracy.

The FMDConv paper borrows two scores from psychology to rank methods by speed and accuracy together.
Its exact formulas are not published, so this module uses the standard definitions:

* **Inverse Efficiency Score** ``IES = time / accuracy``: the time spent per correct answer.
  Lower is better.
* **Rate-Correct Score** ``RCS = accuracy / time``: correct answers per unit time. Higher is better.

Conventions shared by both functions:

* ``time`` is a measured cost of one method, > 0: seconds per training epoch, or latency per image,
  or any other time. The scores carry its unit (IES is in that unit, RCS in its inverse), so two
  scores are only comparable when their times were measured in the same unit, on the same hardware,
  with the same batch size and number of threads.
* ``accuracy`` is the proportion of correct answers in ``[0, 1]`` (usually top-1), never a
  percentage.
* With ``time`` as a mean time per sample, ``RCS`` equals the psychology form "number correct /
  total time": ``(accuracy · N) / (time · N)``.
* Since a network has a single cost figure (not one reaction time per trial, as in psychology),
  ``RCS = 1 / IES`` under these conventions: both rank methods in the same order. Both are kept
  because the paper plots both.

Both accept Python numbers or anything :func:`numpy.asarray` understands (lists, arrays, CPU
tensors) and broadcast like NumPy; scalar inputs give a ``float``, others a ``numpy.ndarray``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

import numpy as np
import torch
from numpy.typing import ArrayLike

Score: TypeAlias = float | np.ndarray


def _as_float_array(value: ArrayLike, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number or a sequence of numbers; got {value!r}") from error


def _as_time(time: ArrayLike) -> np.ndarray:
    values = _as_float_array(time, "time")
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"time must be finite and > 0 (a measured cost such as s/epoch); got {time!r}")
    return values


def _as_proportion(accuracy: ArrayLike) -> np.ndarray:
    values = _as_float_array(accuracy, "accuracy")
    if not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"accuracy must be a proportion in [0, 1] (pass 0.731, not 73.1); got {accuracy!r}")
    return values


def _as_score(values: np.ndarray) -> Score:
    return float(values) if values.ndim == 0 else values


def ies(time: ArrayLike, accuracy: ArrayLike) -> Score:
    """Inverse Efficiency Score: ``time / accuracy``, the cost of one correct answer (lower is better).

    Args:
        time: measured cost of the method, > 0 (for example seconds per epoch or latency per image).
            The score is in the same unit; compare only scores measured in the same unit and on the
            same hardware.
        accuracy: proportion of correct answers in ``[0, 1]`` (top-1), not a percentage.

    Returns:
        The score, ``float`` for scalar inputs, otherwise a broadcast ``numpy.ndarray``.
        An accuracy of 0 gives ``inf`` (no correct answer at any cost).

    Raises:
        ValueError: if ``time`` is not finite and > 0, or ``accuracy`` is outside ``[0, 1]``.

    Example:
        >>> ies(12.0, 0.8)  # 12 s per epoch, 80 % correct: 15 s per epoch of "all correct" work
        15.0
    """
    time_values, accuracy_values = _as_time(time), _as_proportion(accuracy)
    with np.errstate(divide="ignore"):
        return _as_score(time_values / accuracy_values)


def rcs(time: ArrayLike, accuracy: ArrayLike) -> Score:
    """Rate-Correct Score: ``accuracy / time``, correct answers per unit time (higher is better).

    With ``time`` the mean time per sample this is "number correct / total time", the usual
    definition. Under the module's conventions ``rcs(t, a) == 1 / ies(t, a)``.

    Args:
        time: measured cost of the method, > 0, in the same unit for every method compared
            (for example seconds per epoch or latency per image). The score is in its inverse.
        accuracy: proportion of correct answers in ``[0, 1]`` (top-1), not a percentage.

    Returns:
        The score, ``float`` for scalar inputs, otherwise a broadcast ``numpy.ndarray``.

    Raises:
        ValueError: if ``time`` is not finite and > 0, or ``accuracy`` is outside ``[0, 1]``.

    Example:
        >>> rcs(0.004, 0.9)  # 4 ms per image, 90 % correct: 225 correct images per second
        225.0
    """
    return _as_score(_as_proportion(accuracy) / _as_time(time))


def top_k_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = (1, 5)
) -> dict[int, float]:
    """Proportion of samples whose target class is among the ``k`` highest scores, for each ``k``.

    Args:
        logits: class scores, shape ``(N, C)`` with ``N >= 1`` (logits or probabilities: only the
            order matters).
        targets: integer class indices in ``[0, C)``, shape ``(N,)``.
        ks: positive integers. A ``k`` larger than ``C`` is clamped to ``C`` (every target is then in
            the top ``k``, so its accuracy is 1.0); this keeps the default ``(1, 5)`` usable on
            datasets with fewer than 5 classes. Ties between scores are broken by
            :func:`torch.topk`.

    Returns:
        ``{k: accuracy}`` with accuracies as proportions in ``[0, 1]``, keyed by the requested ``k``.

    Raises:
        ValueError: on wrong shapes, non-integer or out-of-range targets, or a ``k`` < 1.
    """
    hits = top_k_hits(logits, targets, ks)
    return {k: count / logits.shape[0] for k, count in hits.items()}


def top_k_hits(logits: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """Number of samples whose target class is among the ``k`` highest scores, for each ``k``.

    The counts behind :func:`top_k_accuracy` (same arguments and errors), for callers that sum them
    over batches or processes.
    """
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of integers >= 1; got {ks!r}")
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must have shape (N, C) with N >= 1; got {tuple(logits.shape)}")
    num_samples, num_classes = logits.shape
    integer_dtype = not (targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool)
    if targets.shape != (num_samples,) or not integer_dtype:
        raise ValueError(
            f"targets must be an integer tensor of shape ({num_samples},); "
            f"got {targets.dtype} {tuple(targets.shape)}"
        )
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ValueError(f"targets must be class indices in [0, {num_classes}); got {targets.tolist()}")
    top_classes = logits.topk(min(max(ks), num_classes), dim=1).indices
    hits = top_classes == targets.to(top_classes.device).unsqueeze(1)
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}
