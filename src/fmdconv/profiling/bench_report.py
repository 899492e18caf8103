"""``fmdconv bench``'s output: the results as Markdown, and the JSON and Markdown files, written atomically.

The Markdown names the machine first (:func:`fmdconv.utils.machine.machine_line`), then per
architecture the time of every variant relative to the static network and its peak memory, the
automatic formulation against every forced one, the targets (:mod:`.bench_targets`), what was
skipped and why, and the load other processes put on the machine while it ran.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fmdconv.profiling.bench_targets import AUTO_MARGIN
from fmdconv.utils.io import write_text_atomic
from fmdconv.utils.machine import machine_line


def _column_title(setting: dict[str, Any]) -> str:
    return f"{setting['stem']} {setting['image_size']}px b{setting['batch_size']} {setting['mode']}"


def _ratio_cell(row: dict[str, Any], static: dict[str, Any]) -> str:
    reference = static["median_s"]
    text = f"{row['relative_to_static']:.2f}"
    if len(row["times_s"]) > 1:
        text += f" [{row['min_s'] / reference:.2f}-{row['max_s'] / reference:.2f}]"
    if row is static:
        text += f" ({reference * 1e3:.0f} ms)"
    return text


def _memory_cell(row: dict[str, Any]) -> str:
    return "-" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f}"


def _table(
    settings: Sequence[dict[str, Any]], cell: Callable[[dict[str, Any], dict[str, Any]], str]
) -> list[str]:
    names = list(dict.fromkeys(row["variant"] for s in settings for row in s["results"]))
    lines = [
        "| variant | " + " | ".join(_column_title(s) for s in settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    for name in names:
        cells = []
        for setting in settings:
            rows = {row["variant"]: row for row in setting["results"]}
            cells.append(cell(rows[name], rows["static"]) if name in rows else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _choice_table(settings: Sequence[dict[str, Any]]) -> list[str]:
    """The automatic formulation against each forced one, per setting and network, in ms."""
    choices = [(s, c) for s in settings for c in s.get("formulation_choices", [])]
    if not choices:
        return []
    names = list(dict.fromkeys(name for _, c in choices for name in c["forced_s"]))
    lines = [
        "",
        "## Automatic formulation against each forced one",
        "",
        "Median ms of one iteration with the automatic choice and with each formulation forced on every "
        f"dynamic layer; `auto / fastest` at most {AUTO_MARGIN:g} is within "
        f"{(AUTO_MARGIN - 1) * 100:.0f}% of the fastest.",
        "",
        "| setting | network | auto | " + " | ".join(names) + " | fastest | auto / fastest |",
        "|---|---|---|" + "---|" * len(names) + "---|---|",
    ]
    for setting, choice in choices:
        forced = [
            f"{choice['forced_s'][name] * 1e3:.1f}" if name in choice["forced_s"] else "-" for name in names
        ]
        verdict = f"{choice['auto_over_fastest']:.2f}" + ("" if choice["within_margin"] else " **over**")
        lines.append(
            f"| {setting['setting']} | {choice['method']} | {choice['auto_s'] * 1e3:.1f} | "
            + " | ".join(forced)
            + f" | {choice['fastest']} | {verdict} |"
        )
    return lines


def to_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown (see the module docstring)."""
    settings = results["settings"]
    lines = [
        "# Speed of the dynamic ResNets relative to the static one",
        "",
        f"Machine: {machine_line(results['machine'])}. Clock: {results['clock']}; {results['dtype']}; "
        f"measured {results['created']} in one run of {results['wall_s']:.0f} s.",
        "",
        "Each cell: median time of one iteration (a training step: forward, backward; or an inference "
        "forward pass) divided by the static network's median in the same column, with the range over "
        "the timed rounds in brackets; the static row gives its median in ms. A formulation after the "
        "network's name (`fmd n=4 matmul`): forced on every dynamic layer; without one, the automatic "
        "choice. `naive`: every dynamic layer with the batch folded into groups and the channel "
        "attentions on the feature maps (the authors' way). `authors' code`: the authors' own "
        "implementation, run in this process. `compiled`: through `torch.compile` (default inductor "
        "backend), compiled before timing; `channels_last`: weights and inputs in that memory format.",
    ]
    for arch in dict.fromkeys(s["arch"] for s in settings):
        group = [s for s in settings if s["arch"] == arch]
        rounds = ", ".join(f"{_column_title(s)}: {s['repeats']}" for s in group)
        lines += ["", f"## {arch}: time relative to static", "", f"Timed rounds: {rounds}.", ""]
        lines += _table(group, _ratio_cell)
        lines += ["", f"## {arch}: peak memory added by one iteration (MiB)", ""]
        lines += _table(group, lambda row, static: _memory_cell(row))
    lines += _choice_table(settings)
    lines += [
        "",
        "## Targets",
        "",
        "| target | setting | measured | threshold | met |",
        "|---|---|---|---|---|",
    ]
    for target in results["targets"]:
        sign = "<=" if target["at_most"] else ">="
        lines.append(
            f"| {target['target']} | {target['setting']} | {target['measured']:.2f} | "
            f"{sign} {target['threshold']:g} | {'yes' if target['met'] else '**no**'} |"
        )
    if results.get("skipped"):
        lines += ["", "## Skipped", ""]
        reasons: dict[tuple[str, str], list[str]] = {}
        for skip in results["skipped"]:
            reasons.setdefault((skip["variant"], skip["reason"]), []).append(skip["setting"])
        lines += [
            f"- {variant}: {reason} ({'; '.join(where)})" for (variant, reason), where in reasons.items()
        ]
    load = [
        f"{s['setting']}: {s['other_processes_cpu_s']:.0f} s"
        for s in settings
        if s["other_processes_cpu_s"] is not None
    ]
    if load:
        lines += [
            "",
            "CPU time other processes used while each setting was being timed (the run waited up to "
            f"{results['quiet_wait_s']:.0f} s before each round for them to go quiet): "
            + "; ".join(load)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], directory: str | Path, stem: str = "cpu") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` (:func:`to_markdown`) in ``directory``, each atomically."""
    return write_result_files(results, to_markdown(results), directory, stem)


def write_result_files(
    results: dict[str, Any], markdown: str, directory: str | Path, stem: str
) -> tuple[Path, Path]:
    """Write ``results`` as ``<stem>.json`` and ``markdown`` as ``<stem>.md`` in ``directory``, each
    replaced atomically; the benchmarks' common output (CPU here, GPU in :mod:`.gpu_bench`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = directory / f"{stem}.json", directory / f"{stem}.md"
    write_text_atomic(json_path, json.dumps(results, indent=2) + "\n")
    write_text_atomic(markdown_path, markdown)
    return json_path, markdown_path
