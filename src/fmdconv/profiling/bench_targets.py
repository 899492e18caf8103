"""The speed targets ``fmdconv bench`` checks, and the automatic choice against every forced formulation.

Each target is checked in every measured setting it applies to (ratios of medians of one setting):

- FMDConv ResNet-18 (n = 4), training step / static: at most 2.3x at 32x32 batch 64 (CIFAR stem),
  at most 2.5x at 112x112 and 224x224 batch 32 (ImageNet stem);
- FMDConv ResNet-18 (n = 4), inference at batch 1 / static: at most 1.5x;
- the authors' FMDConv code / fmdconv's FMDConv (n = 4), training step: at least 1.1 (ours faster);
- ODConv / FMDConv (n = 4), training step: at least 2 (the FMDConv paper's claim);
- the naive computation / each dynamic variant: at least 1 (the fast paths are faster);
- the automatic formulation / the fastest forced formulation of the same network: at most 1.05
  (the automatic choice within 5% of the best single formulation forced on every layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The automatic choice may be this much slower than the fastest forced formulation.
AUTO_MARGIN = 1.05
# FMDConv n = 4 training step / static, at most, per stem.
TRAINING_STEP_LIMITS = {"cifar": 2.3, "imagenet": 2.5}
BATCH1_INFERENCE_LIMIT = 1.5
AUTHORS_OVER_OURS_AT_LEAST = 1.1
OD_OVER_FMD_AT_LEAST = 2.0


def _forced(row: dict[str, Any]) -> bool:
    """A row of its method's network with one formulation forced (no other flag)."""
    flags = ("naive", "compiled", "channels_last", "authors")
    return row.get("formulation", "auto") != "auto" and not any(row.get(flag) for flag in flags)


def formulation_choices(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each network of a setting timed with forced formulations: its automatic time against each.

    One entry per method (``"fmd n=4"``): ``auto_s``, ``forced_s`` (formulation -> median seconds),
    the ``fastest`` forced formulation, ``auto_over_fastest`` and ``within_margin`` (at most
    :data:`AUTO_MARGIN`).
    """
    by_name = {row["variant"]: row for row in rows}
    forced: dict[str, dict[str, float]] = {}
    for row in rows:
        if _forced(row):
            forced.setdefault(row["method"], {})[row["formulation"]] = row["median_s"]
    choices = []
    for method, times in forced.items():
        auto = by_name.get(method)
        if auto is None:
            continue
        fastest = min(times, key=times.__getitem__)
        ratio = auto["median_s"] / times[fastest]
        choices.append(
            {
                "method": method,
                "auto_s": auto["median_s"],
                "forced_s": times,
                "fastest": fastest,
                "fastest_s": times[fastest],
                "auto_over_fastest": ratio,
                "within_margin": ratio <= AUTO_MARGIN,
            }
        )
    return choices


def _target(
    description: str, setting: dict[str, Any], value: float, threshold: float, at_most: bool
) -> dict[str, Any]:
    return {
        "target": description,
        "setting": setting["setting"],
        "measured": value,
        "threshold": threshold,
        "at_most": at_most,
        "met": value <= threshold if at_most else value >= threshold,
    }


def evaluate_targets(settings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every target of the module docstring, in each measured setting it applies to."""
    targets = []
    for setting in settings:
        rows = {row["variant"]: row for row in setting["results"]}
        fmd, od = rows.get("fmd n=4"), rows.get("od n=4")
        resnet18, train = setting["arch"] == "resnet18", setting["mode"] == "train"
        if fmd is not None and resnet18 and train:
            limit = TRAINING_STEP_LIMITS[setting["stem"]]
            ratio = fmd["relative_to_static"]
            targets.append(_target("FMDConv n=4 training step / static", setting, ratio, limit, True))
        if fmd is not None and resnet18 and not train and setting["batch_size"] == 1:
            ratio = fmd["relative_to_static"]
            targets.append(
                _target("FMDConv n=4 inference / static", setting, ratio, BATCH1_INFERENCE_LIMIT, True)
            )
        authors = rows.get("fmd n=4 authors' code")
        if fmd is not None and authors is not None and train:
            ratio = authors["median_s"] / fmd["median_s"]
            targets.append(
                _target(
                    "authors' FMDConv code / FMDConv n=4 training step",
                    setting,
                    ratio,
                    AUTHORS_OVER_OURS_AT_LEAST,
                    False,
                )
            )
        if fmd is not None and od is not None and train:
            speedup = od["median_s"] / fmd["median_s"]
            targets.append(
                _target(
                    "ODConv n=4 / FMDConv n=4 training step", setting, speedup, OD_OVER_FMD_AT_LEAST, False
                )
            )
        for name, row in rows.items():
            naive = rows.get(f"{name} naive")
            if naive is not None:
                speedup = naive["median_s"] / row["median_s"]
                targets.append(_target(f"naive / {name}", setting, speedup, 1.0, False))
        for choice in setting.get("formulation_choices", []):
            targets.append(
                _target(
                    f"{choice['method']} automatic / fastest forced ({choice['fastest']})",
                    setting,
                    choice["auto_over_fastest"],
                    AUTO_MARGIN,
                    True,
                )
            )
    return targets
