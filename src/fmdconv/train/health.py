"""Training-health signals: gradient-norm spikes and the state of the attentions.

An attention collapse (docs/design.md, section 8) shows as a jump of the global gradient norm, sigmoid gates
pinned near 0 or 1, and kernel softmaxes turned one-hot. :class:`GradientSpikeDetector` compares each
step's gradient norm with its recent running level; :class:`AttentionProbe` measures, over one forward
pass, the fraction of saturated sigmoid gates and the mean maximum kernel-attention probability of
a model's dynamic layers. The probe hooks the attention paths only while it records, so steps that
are not logged cost nothing.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from fmdconv.layers import DynamicConv2d, SharedRouting
from fmdconv.layers.attention import GateTrunk

SATURATION_MARGIN = 0.01
SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 20
SPIKE_MIN_HISTORY = 5


@dataclass
class AttentionStats:
    """Sums over the attentions seen by one :meth:`AttentionProbe.record`.

    ``gate_saturation``: the fraction of sigmoid attention values (ODConv/FMDConv gates, CondConv
    routing weights) below ``SATURATION_MARGIN`` or above ``1 - SATURATION_MARGIN``;
    ``kernel_max_prob``: the mean over samples and layers of the largest kernel-softmax probability
    (1/n uniform, 1 one-hot). Each is None when the model has no such attention.
    """

    saturated: int = 0
    gates: int = 0
    max_prob_sum: float = 0.0
    softmaxes: int = 0

    def add_gates(self, values: Tensor) -> None:
        """Count the sigmoid attention ``values`` (any shape) and how many of them are saturated."""
        self.saturated += int(((values < SATURATION_MARGIN) | (values > 1 - SATURATION_MARGIN)).sum())
        self.gates += values.numel()

    def add_softmax(self, probabilities: Tensor) -> None:
        """Add the largest probability of each sample's kernel softmax, ``probabilities`` (B, n)."""
        self.max_prob_sum += float(probabilities.max(dim=1).values.sum())
        self.softmaxes += probabilities.shape[0]

    @property
    def gate_saturation(self) -> float | None:
        return self.saturated / self.gates if self.gates else None

    @property
    def kernel_max_prob(self) -> float | None:
        return self.max_prob_sum / self.softmaxes if self.softmaxes else None

    def as_record(self) -> dict[str, float]:
        """The defined statistics, for a metrics record."""
        values = {"gate_saturation": self.gate_saturation, "kernel_max_prob": self.kernel_max_prob}
        return {name: value for name, value in values.items() if value is not None}


class AttentionProbe:
    """Measures the attentions of ``model``'s dynamic layers during the forward passes it records.

    Forward hooks on the attention paths read their logits and normalise them with the layer's own
    :meth:`~fmdconv.layers.DynamicConv2d.normalise_gate` / ``normalise_kernel``; they are registered
    by :meth:`record` and removed when it ends.
    """

    def __init__(self, model: nn.Module) -> None:
        self.targets: list[tuple[nn.Module, DynamicConv2d | None]] = []
        for module in model.modules():
            if isinstance(module, DynamicConv2d):
                self.targets += [(path, module) for path in (module.gate, module.kernel_path) if path]
            elif isinstance(module, SharedRouting):
                self.targets.append((module, None))

    @property
    def active(self) -> bool:
        """Whether the model has any attention to measure."""
        return bool(self.targets)

    @contextlib.contextmanager
    def record(self) -> Iterator[AttentionStats]:
        """Collect the statistics of the forward passes run inside the ``with`` block."""
        stats = AttentionStats()
        handles = [path.register_forward_hook(self._hook(stats, layer)) for path, layer in self.targets]
        try:
            yield stats
        finally:
            for handle in handles:
                handle.remove()

    @staticmethod
    def _hook(stats: AttentionStats, layer: DynamicConv2d | None) -> Any:
        """A hook on one attention path of ``layer`` (None: a block's :class:`SharedRouting`); the
        logits are normalised by the layer itself, as its forward does."""

        def add(name: str, logits: Tensor) -> None:
            logits = logits.detach().float()
            if layer is None:  # SharedRouting: already sigmoid weights
                stats.add_gates(logits)
            elif name != "kernel":
                stats.add_gates(layer.normalise_gate(logits))
            elif layer.spec.kernel_activation == "softmax":
                stats.add_softmax(layer.normalise_kernel(logits))
            else:  # CondConv's sigmoid routing
                stats.add_gates(layer.normalise_kernel(logits))

        @torch.no_grad()
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            # A GateTrunk returns its heads' logits side by side (split per head by the trunk, for
            # the heads named in its call); a kernel path, the kernel logits.
            heads = module.split(output, *inputs[1:]) if isinstance(module, GateTrunk) else {"kernel": output}
            for name, logits in heads.items():
                add(name, logits)

        return hook


@dataclass
class GradientSpikeDetector:
    """Flags a gradient norm more than ``factor`` times the median of the last ``window`` norms.

    Nothing is flagged before ``min_history`` norms have been seen. Non-finite norms always count
    as spikes; they do not enter the running level.
    """

    factor: float = SPIKE_FACTOR
    window: int = SPIKE_WINDOW
    min_history: int = SPIKE_MIN_HISTORY
    recent: deque[float] = field(default_factory=deque)

    def update(self, norm: float) -> float | None:
        """Record ``norm``; return the running level it jumped from if it is a spike, else None."""
        level = statistics.median(self.recent) if len(self.recent) >= self.min_history else None
        finite = math.isfinite(norm)
        if finite:
            self.recent.append(norm)
            if len(self.recent) > self.window:
                self.recent.popleft()
        if level is not None and (not finite or norm > self.factor * level):
            return level
        return None


@dataclass
class EpochHealth:
    """Gradient norms and attention statistics gathered during one training epoch.

    ``attentions``: the :class:`AttentionStats` record of the last logged step (``gate_saturation``,
    ``kernel_max_prob``; empty for a static model).
    """

    last_norm: float = 0.0
    epoch_max: float = 0.0
    interval_max: float = 0.0
    spikes: int = 0
    attentions: dict[str, float] = field(default_factory=dict)

    def add(self, norm: float, spike_level: float | None = None) -> bool:
        """Record one step's gradient norm (a non-finite one makes the maxima infinite) and, when it
        is a spike, the level it jumped from. True for the epoch's first spike, the one to warn of."""
        self.last_norm = norm
        self.epoch_max = max(self.epoch_max, norm) if math.isfinite(norm) else math.inf
        self.interval_max = max(self.interval_max, norm) if math.isfinite(norm) else math.inf
        if spike_level is None:
            return False
        self.spikes += 1
        return self.spikes == 1

    def take_interval_max(self) -> float:
        """The largest norm since the previous call (or the epoch's start), then reset."""
        largest, self.interval_max = self.interval_max, 0.0
        return largest


def spike_warning(norm: float, level: float, factor: float, iteration: int) -> str:
    """The warning of a gradient spike: ``norm`` at ``iteration``, over ``factor`` times ``level``."""
    return (
        f"gradient norm {norm:.3g} at iteration {iteration} is more than {factor:g}x its recent "
        f"level {level:.3g}: the attentions may be collapsing (see gate_saturation / kernel_max_prob "
        "in metrics.jsonl and docs/training.md)"
    )


def global_grad_norm(parameters: Any) -> Tensor:
    """The L2 norm of all gradients of ``parameters`` together (a 0-d tensor; 0 without gradients)."""
    return nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
