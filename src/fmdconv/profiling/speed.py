"""Wall-clock speed of a model: :func:`measure_speed`.

The FMDConv paper's claim is about measured cost (0.192 s against ODConv's 0.386 s per training
iteration for ResNet-18), not analytic MACs, so the speed of each method is measured, not derived:
warm-up iterations first (allocator, kernel selection, oneDNN primitive caches), then repeated timed
iterations, reported as the median with the spread, the thread count and the device.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fmdconv.utils.devices import resolve_device
from fmdconv.utils.timing import time_interleaved

MODES = ("inference", "train")


@dataclass(frozen=True)
class SpeedResult:
    """Seconds per iteration (one batch) of each timed repeat, and what they were measured under."""

    mode: str
    device: str
    threads: int
    batch_size: int
    input_size: tuple[int, ...]
    warmup: int
    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def quartiles(self) -> tuple[float, float]:
        """First and third quartile of the times (both the single time when there is one)."""
        if len(self.times) == 1:
            return self.times[0], self.times[0]
        q1, _, q3 = statistics.quantiles(self.times, n=4, method="inclusive")
        return q1, q3

    @property
    def per_sample(self) -> float:
        """Median seconds per image."""
        return self.median / self.batch_size

    @property
    def throughput(self) -> float:
        """Images per second at the median time."""
        return self.batch_size / self.median

    def summary(self) -> str:
        q1, q3 = self.quartiles
        return (
            f"{self.median * 1e3:.2f} ms per batch of {self.batch_size} "
            f"(IQR {q1 * 1e3:.2f}-{q3 * 1e3:.2f} ms, {len(self.times)} runs), {self.mode}, "
            f"{self.device}, {self.threads} threads"
        )

    def to_dict(self) -> dict[str, object]:
        q1, q3 = self.quartiles
        return {
            "mode": self.mode,
            "device": self.device,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "input_size": list(self.input_size),
            "warmup": self.warmup,
            "times_s": list(self.times),
            "median_s": self.median,
            "q1_s": q1,
            "q3_s": q3,
            "per_sample_s": self.per_sample,
            "throughput_per_s": self.throughput,
        }


def _loss(output: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """A scalar that depends on every output (logits or a list of feature maps)."""
    outputs = output if isinstance(output, list | tuple) else [output]
    return sum(o.float().mean() for o in outputs)  # type: ignore[return-value]


def measure_speed(
    model: nn.Module,
    input_size: tuple[int, ...] = (3, 224, 224),
    batch_size: int = 1,
    mode: str = "inference",
    device: str | torch.device | None = None,
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
) -> SpeedResult:
    """Time ``model`` on random batches of ``batch_size`` images of ``input_size`` (C, H, W).

    Args:
        mode: ``"inference"`` (eval mode, no gradients: one forward pass per iteration) or
            ``"train"`` (train mode: forward, a loss over all outputs and backward per iteration; no
            optimizer step). Gradients are cleared before and after.
        device: where to run (``"cpu"``, ``"cuda"``, ...); the model is moved there. Default: the
            device of the model's parameters.
        warmup: untimed iterations first.
        repeats: timed iterations; the median and quartiles summarise them.
        threads: CPU threads for the measurement (restored afterwards); default: the current setting.

    The training flags of all modules are restored afterwards.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    for name, value, minimum in (
        ("batch_size", batch_size, 1),
        ("warmup", warmup, 0),
        ("repeats", repeats, 1),
    ):
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    if device is None:
        reference = next(model.parameters(), None)
        device = reference.device if reference is not None else torch.device("cpu")
    device = resolve_device(device)
    model.to(device)
    previous_threads = torch.get_num_threads()
    modes = {module: module.training for module in model.modules()}
    x = torch.randn(batch_size, *input_size, device=device)
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        model.train(mode == "train")
        model.zero_grad(set_to_none=True)

        def iteration() -> None:
            if mode == "train":
                _loss(model(x)).backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    model(x)

        times = time_interleaved({mode: iteration}, repeats, device, warmup=warmup)[mode]
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
        for module, training in modes.items():
            module.training = training
        model.zero_grad(set_to_none=True)
    return SpeedResult(mode, str(device), used_threads, batch_size, tuple(input_size), warmup, tuple(times))
