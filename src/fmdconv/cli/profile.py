"""``fmdconv profile``: parameters, MACs and speed of a backbone, or a comparison across methods.

Examples::

    fmdconv profile --model resnet18 --conv fmd --kernel-num 4 --input-size 224
    fmdconv profile --model mobilenet_v2 --width 0.5 --conv static --conv od:1 --conv od:4 --no-speed
    fmdconv profile --model resnet18 --conv dy --json
    fmdconv profile --model resnet18 --conv static --conv kw:1/4 --conv kw:4 --conv fd:64 --no-speed

``--conv KIND[:N]`` may be repeated; ``N`` overrides ``--kernel-num`` for that entry. ``KIND`` is a
convolution (``static``, ``cond``, ``dy``, ``od``, ``fmd``, ``dcd``, ``fd``, ``kw``) or a feature
attention on the static ResNet (``se``, ``cbam``, ``eca``); only the kernel mixtures and ``fd`` (its
frequency groups) take ``:N``, and ``kw`` takes its ratio (``kw:1/4`` ... ``kw:4``, default 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass

import torch

from fmdconv.cli._arguments import add_device_argument, int_at_least
from fmdconv.layers import method_info
from fmdconv.models import METHODS, create_model, list_models, method_options
from fmdconv.models.kernelwarehouse import parse_ratio
from fmdconv.profiling import MODES, ModelProfile, SpeedResult, measure_speed, profile


@dataclass(frozen=True)
class ConvChoice:
    kind: str
    kernel_num: int | None
    kw_ratio: str | None = None  # KernelWarehouse's ratio ("1/4" ... "4"), for kind "kw"

    @property
    def label(self) -> str:
        number = self.kw_ratio if self.kind == "kw" else self.kernel_num
        return self.kind if number is None else f"{self.kind}:{number}"


def conv_choice(text: str) -> ConvChoice:
    """Parse ``KIND``, ``KIND:N`` or ``kw:RATIO`` (argparse type)."""
    kind, _, number = text.partition(":")
    if kind not in METHODS:
        raise argparse.ArgumentTypeError(
            f"unknown conv {kind!r}; accepted: {', '.join(METHODS)} (the kernel mixtures optionally :N)"
        )
    if not number:
        return ConvChoice(kind, None)
    if kind == "kw":
        try:
            return ConvChoice(kind, None, parse_ratio(number))
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    if not method_info(kind).takes("kernel_num"):
        raise argparse.ArgumentTypeError(f"{kind} mixes no kernels: {text!r} takes no :N")
    if not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"kernel number in {text!r} must be a positive int")
    return ConvChoice(kind, int(number))


def input_size(text: str) -> tuple[int, int]:
    """Parse ``224`` or ``224x192`` (height x width) (argparse type)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"input size must be like 224 or 224x192, got {text!r}")
    height = int(parts[0])
    return height, int(parts[-1])


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="parameters, MACs and speed of a model",
        description=(
            "Count parameters and per-image MACs (convention: docs/models.md) and measure speed of a "
            "backbone; with several --conv, compare them in one table."
        ),
    )
    parser.add_argument("--model", required=True, choices=list_models(), help="backbone name")
    parser.add_argument(
        "--conv",
        type=conv_choice,
        action="append",
        metavar="KIND[:N]",
        help=f"convolution kind or feature attention, one of {', '.join(METHODS)}; repeat to compare "
        "(default: fmd)",
    )
    parser.add_argument(
        "--kernel-num", type=int_at_least(1), default=4, help="kernels per dynamic convolution (default 4)"
    )
    parser.add_argument("--input-size", type=input_size, default=(224, 224), help="224 or HxW (default 224)")
    parser.add_argument("--in-chans", type=int_at_least(1), default=3, help="input channels (default 3)")
    parser.add_argument(
        "--num-classes", type=int_at_least(1), default=1000, help="classifier outputs (default 1000)"
    )
    parser.add_argument("--width", type=float, default=1.0, help="MobileNetV2 width multiplier (default 1.0)")
    parser.add_argument("--stem", choices=("imagenet", "cifar"), default="imagenet", help="default imagenet")
    parser.add_argument("--no-speed", action="store_true", help="count only, do not time")
    parser.add_argument("--mode", choices=MODES, default="inference", help="what to time (default inference)")
    parser.add_argument(
        "--batch-size", type=int_at_least(1), default=1, help="batch size for timing (default 1)"
    )
    parser.add_argument("--warmup", type=int_at_least(0), default=3, help="untimed iterations (default 3)")
    parser.add_argument("--repeats", type=int_at_least(1), default=10, help="timed iterations (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for timing (default: torch's)")
    add_device_argument(parser, default="cpu")
    parser.add_argument("--layers", action="store_true", help="also print the per-layer table (one model)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=run)


def _format_count(value: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.3f}{suffix}{unit}"
    return f"{value:.0f}{unit}"


def _report(args: argparse.Namespace, choice: ConvChoice) -> tuple[ModelProfile, SpeedResult | None]:
    kernel_num = args.kernel_num if choice.kernel_num is None else choice.kernel_num
    # Counting alone needs only shapes: on the meta device nothing is allocated or computed.
    with torch.device("meta") if args.no_speed else contextlib.nullcontext():
        model = create_model(
            args.model,
            **method_options(choice.kind),
            kernel_num=kernel_num,
            **({} if choice.kw_ratio is None else {"kw_ratio": choice.kw_ratio}),
            num_classes=args.num_classes,
            stem=args.stem,
            width=args.width,
            in_chans=args.in_chans,
        )
    size = (args.in_chans, *args.input_size)
    counts = profile(model, size)
    speed = None
    if not args.no_speed:
        speed = measure_speed(
            model, size, args.batch_size, args.mode, args.device, args.warmup, args.repeats, args.threads
        )
    return counts, speed


def _entry(
    args: argparse.Namespace, choice: ConvChoice, counts: ModelProfile, speed: SpeedResult | None
) -> dict:
    kernel_num = args.kernel_num if choice.kernel_num is None else choice.kernel_num
    return {
        "model": args.model,
        "conv": choice.kind,
        "kernel_num": kernel_num if method_info(choice.kind).takes("kernel_num") else None,
        "kw_ratio": (choice.kw_ratio or "1") if choice.kind == "kw" else None,
        "width": args.width,
        "stem": args.stem,
        "params": counts.params,
        "macs": counts.macs,
        "breakdown": counts.breakdown,
        "input_size": list(counts.input_size),
        "speed": None if speed is None else speed.to_dict(),
    }


def _single_text(entry: dict, counts: ModelProfile, speed: SpeedResult | None, layers: bool) -> str:
    kernels = "" if entry["kernel_num"] is None else f", kernel_num={entry['kernel_num']}"
    kernels += "" if entry["kw_ratio"] is None else f", kw_ratio={entry['kw_ratio']}"
    lines = [
        f"{entry['model']} (conv={entry['conv']}{kernels}), input {'x'.join(map(str, counts.input_size))}",
        f"params  {counts.params:,} ({_format_count(counts.params)})",
        f"MACs    {counts.macs:,} ({_format_count(counts.macs)}) per image",
        *(f"  {part:<12}{value:>16,}" for part, value in counts.breakdown.items()),
    ]
    if speed is not None:
        lines.append(f"speed   {speed.summary()}")
    if layers:
        lines += ["", counts.table()]
    return "\n".join(lines)


def _comparison_text(entries: list[dict]) -> str:
    """One row per entry; speed columns (median, ratio to the first entry) when speed was measured."""
    first = entries[0]
    timed = first["speed"] is not None
    header = ["conv", "kernels", "params", "MACs", *(["median ms", "vs first"] if timed else [])]
    rows = []
    for entry in entries:
        kernels = "-" if entry["kernel_num"] is None else str(entry["kernel_num"])
        row = [
            entry["conv"],
            kernels if entry["kw_ratio"] is None else f"{entry['kw_ratio']}x",
            _format_count(entry["params"]),
            _format_count(entry["macs"]),
        ]
        if timed:
            median = entry["speed"]["median_s"]
            row += [f"{median * 1e3:.2f}", f"{median / first['speed']['median_s']:.2f}x"]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    size = "x".join(map(str, first["input_size"]))
    title = f"{first['model']} (width {first['width']}, {first['stem']} stem), input {size}, MACs per image"
    if timed:
        speed = first["speed"]
        lines.append(
            f"speed: {speed['mode']}, batch {speed['batch_size']}, {speed['device']}, "
            f"{speed['threads']} threads, median of {len(speed['times_s'])} runs"
        )
    return "\n".join([title, *lines])


def run(args: argparse.Namespace) -> int:
    choices = args.conv or [ConvChoice("fmd", None)]
    try:
        results = [(choice, *_report(args, choice)) for choice in choices]
    except ValueError as error:
        print(f"fmdconv profile: error: {error}", file=sys.stderr)
        return 2
    entries = [_entry(args, choice, counts, speed) for choice, counts, speed in results]
    if args.json:
        print(json.dumps(entries[0] if len(entries) == 1 else entries, indent=2))
    elif len(entries) == 1:
        _, counts, speed = results[0]
        print(_single_text(entries[0], counts, speed, args.layers))
    else:
        print(_comparison_text(entries))
    return 0
