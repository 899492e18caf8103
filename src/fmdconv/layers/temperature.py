"""Temperature schedules (docs/design.md, section 2) and the scheduler that steps a model's temperatures.

Temperatures live in the layers as buffers (``gate_temperature``, ``kernel_temperature``); a
schedule maps the global training iteration t (counting from 1) to a value, and
:class:`TemperatureScheduler` writes the values into every dynamic layer each iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn

from fmdconv.layers.dynamic_conv import DynamicConv2d
from fmdconv.layers.kernelwarehouse import KWConv2d, kw_layers

KERNEL_MODES = ("degraded", "constant", "step")


class TemperatureSchedule(Protocol):
    def __call__(self, iteration: int) -> float: ...


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class ConstantTemperature:
    """The same temperature at every iteration (the released FMDConv code's kernel tau = 34)."""

    value: float

    def __post_init__(self) -> None:
        _check_positive(value=self.value)

    def __call__(self, iteration: int) -> float:
        return self.value


@dataclass(frozen=True)
class LinearTemperature:
    """T(t) = end + (start - end) * max(0, N - t) / N, N = warm_epochs * iters_per_epoch.

    The ODConv/FMDConv rule: from ``start`` at t = 0 to ``end`` at the end of epoch ``warm_epochs``,
    then constant. A ``start`` below ``end`` rises the same way (a start temperature of 0.5 is used,
    not replaced by 1). KernelWarehouse's tau runs from 1 to 0 this way (:func:`kw_schedule`).
    """

    iters_per_epoch: int
    start: float = 30.0
    end: float = 1.0
    warm_epochs: float = 10

    def __post_init__(self) -> None:
        _check_positive(iters_per_epoch=self.iters_per_epoch, start=self.start)
        if not self.end >= 0:
            raise ValueError(f"end must be >= 0, got {self.end!r}")
        if self.warm_epochs < 0:
            raise ValueError(f"warm_epochs must be >= 0, got {self.warm_epochs!r}")

    def __call__(self, iteration: int) -> float:
        total = self.warm_epochs * self.iters_per_epoch
        if total == 0:
            return self.end
        return self.end + (self.start - self.end) * max(0.0, total - iteration) / total


@dataclass(frozen=True)
class StepTemperature:
    """tau = max(end, start - step * epoch), epoch = (t - 1) // iters_per_epoch.

    The common DyConv code's rule: 34, 31, ..., 4, 1.
    """

    iters_per_epoch: int
    start: float = 34.0
    step: float = 3.0
    end: float = 1.0

    def __post_init__(self) -> None:
        _check_positive(iters_per_epoch=self.iters_per_epoch, start=self.start, end=self.end)

    def __call__(self, iteration: int) -> float:
        epoch = max(0, iteration - 1) // self.iters_per_epoch
        return max(self.end, self.start - self.step * epoch)


def dynamic_layers(model: nn.Module) -> list[DynamicConv2d]:
    return [m for m in model.modules() if isinstance(m, DynamicConv2d)]


def kw_schedule(iters_per_epoch: int, warm_epochs: float = 20) -> LinearTemperature:
    """KernelWarehouse's tau: linear from 1 to 0 over the first ``warm_epochs`` epochs, per iteration
    (the authors' 20; 15 for their MobileNetV2), then 0."""
    return LinearTemperature(iters_per_epoch, start=1.0, end=0.0, warm_epochs=warm_epochs)


def set_temperature(model: nn.Module, gate: float | None = None, kernel: float | None = None) -> int:
    """Set the gate and/or kernel temperature of every dynamic layer in ``model`` (None: unchanged).

    Layers without that temperature are left alone; ``kernel`` is KernelWarehouse's tau (in [0, 1])
    in its layers. Returns the number of dynamic layers visited.
    """
    layers: list[DynamicConv2d | KWConv2d] = [*dynamic_layers(model), *kw_layers(model)]
    for layer in layers:
        layer.set_temperature(gate=gate, kernel=kernel)
    return len(layers)


def paper_schedules(
    model: nn.Module,
    iters_per_epoch: int,
    *,
    warm_epochs: float = 10,
    kernel_mode: str = "degraded",
    gate_start: float | None = None,
    kernel_start: float | None = None,
) -> tuple[TemperatureSchedule | None, TemperatureSchedule | None]:
    """The papers' gate and kernel schedules for the dynamic layers of ``model``.

    Gates anneal linearly per iteration from the method's start (30) to 1 over ``warm_epochs``.
    The kernel temperature starts at the method's value (FMDConv 34, ODConv and DyConv 30) or
    ``kernel_start``, and then: ``"degraded"`` anneals it the same way (the FMDConv paper's intent),
    ``"constant"`` keeps it (the FMDConv authors' release), ``"step"`` lowers it by 3 each epoch (the
    common DyConv code). A temperature none of the layers has gets ``None``. A KernelWarehouse
    model gets no gate schedule and :func:`kw_schedule` over its layers' ``warm_epochs`` (20, its
    MobileNetV2 15) as the kernel schedule; ``warm_epochs`` and the kernel options are the other
    methods'.
    """
    if kernel_mode not in KERNEL_MODES:
        raise ValueError(f"kernel_mode must be one of {KERNEL_MODES}, got {kernel_mode!r}")
    layers = dynamic_layers(model)
    warehouse_layers = kw_layers(model)
    if warehouse_layers:
        if layers:
            raise ValueError("the model mixes KernelWarehouse with other dynamic layers: build the schedules")
        spans = {layer.warm_epochs for layer in warehouse_layers}
        if len(spans) > 1:
            raise ValueError(f"the KernelWarehouse layers anneal over different epochs {sorted(spans)}")
        return None, kw_schedule(iters_per_epoch, spans.pop())
    gate_starts = {layer.spec.gate_temperature for layer in layers} - {None}
    kernel_starts = {layer.spec.kernel_temperature for layer in layers} - {None}
    for name, starts, override in (
        ("gate", gate_starts, gate_start),
        ("kernel", kernel_starts, kernel_start),
    ):
        if len(starts) > 1 and override is None:
            raise ValueError(
                f"the model mixes methods with different {name} temperatures {sorted(starts)}: "
                f"pass {name}_start"
            )
    gate = kernel = None
    if gate_starts:
        start = gate_start if gate_start is not None else gate_starts.pop()
        gate = LinearTemperature(iters_per_epoch, start=start, warm_epochs=warm_epochs)
    if kernel_starts:
        start = kernel_start if kernel_start is not None else kernel_starts.pop()
        kernel = {
            "degraded": lambda: LinearTemperature(iters_per_epoch, start=start, warm_epochs=warm_epochs),
            "constant": lambda: ConstantTemperature(start),
            "step": lambda: StepTemperature(iters_per_epoch, start=start),
        }[kernel_mode]()
    return gate, kernel


class TemperatureScheduler:
    """Steps the temperatures of every dynamic layer of ``model``, once per training iteration.

    Call :meth:`step` after (or before) each optimizer step; its state (the iteration counter) goes
    into training checkpoints. The values themselves are model buffers, saved with the model.
    """

    def __init__(
        self,
        model: nn.Module,
        gate: TemperatureSchedule | None = None,
        kernel: TemperatureSchedule | None = None,
        iteration: int = 0,
    ) -> None:
        self.model = model
        self.gate = gate
        self.kernel = kernel
        self.iteration = iteration
        self.apply()

    @classmethod
    def for_paper(cls, model: nn.Module, iters_per_epoch: int, **options: object) -> TemperatureScheduler:
        """A scheduler with :func:`paper_schedules` (options are passed on)."""
        gate, kernel = paper_schedules(model, iters_per_epoch, **options)  # type: ignore[arg-type]
        return cls(model, gate, kernel)

    def values(self, iteration: int | None = None) -> dict[str, float | None]:
        t = self.iteration if iteration is None else iteration
        return {
            "gate": None if self.gate is None else self.gate(t),
            "kernel": None if self.kernel is None else self.kernel(t),
        }

    def apply(self) -> None:
        """Write the values for the current iteration into the model."""
        values = self.values()
        set_temperature(self.model, gate=values["gate"], kernel=values["kernel"])

    def step(self) -> dict[str, float | None]:
        """Advance one iteration and update the model; returns the values now in force."""
        self.iteration += 1
        self.apply()
        return self.values()

    def state_dict(self) -> dict[str, int]:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.iteration = int(state["iteration"])
        self.apply()
