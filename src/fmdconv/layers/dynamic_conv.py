"""One dynamic convolution mechanism; each method is a :class:`DynamicConvSpec` preset of it.

A dynamic convolution computes, per sample b (docs/design.md, section 1),

    y_b = output_b * ( conv(input_b * x_b, sum_i kernel_b,i * (spatial_b * W_i)) + sum_i kernel_b,i * bias_i )

where the attentions come from the pooled input through up to two paths: a gate trunk
(FC -> BN -> ReLU, then one head per gate; ODConv) and a kernel path (an MLP as in DyConv, or
CondConv's single routing FC). Sigmoid gates are divided by the gate temperature, the kernel
logits by the kernel temperature; both are buffers, so they travel with ``state_dict()``.

One module for the one core every kernel mixture shares: its attention paths, the per-sample
scales and the hand-off to a formulation are read together when a method is added or changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv.layers.attention import GateTrunk, KernelMLP, KernelRouting, check_attention_init
from fmdconv.layers.dcd import check_input_dtype
from fmdconv.layers.formulations import (
    CONVOLUTIONS,
    FORMULATIONS,
    LayerChoices,
    scale_channels,
    select_formulation,
)
from fmdconv.layers.helpers import (
    IntPair,
    PaddingArg,
    check_int,
    is_int_at_least,
    is_number,
    set_conv_arguments,
)

ATTENTION_NAMES = ("input", "output", "spatial", "kernel")


@dataclass(frozen=True)
class DynamicConvSpec:
    """Which attentions a method has, where they come from and how they are normalised.

    Attributes:
        gates: sigmoid attentions computed by the shared gate trunk, among ``input`` (C_in),
            ``output`` (C_out) and ``spatial`` (kh x kw); each is divided by the gate temperature.
        kernel_source: where the kernel attention (B, n) comes from: ``"trunk"`` (a head of the gate
            trunk, ODConv), ``"mlp"`` (a separate FC-ReLU-FC path, DyConv and FMDConv) or
            ``"routing"`` (a single FC, CondConv).
        kernel_activation: ``"softmax"`` (divided by the kernel temperature) or ``"sigmoid"``
            (CondConv's independent routing weights, no temperature).
        bias: whether the layer has per-kernel biases when the user does not say.
        gate_temperature, kernel_temperature: initial values, which are also where the papers'
            schedules start (docs/design.md, section 2).
    """

    gates: tuple[str, ...]
    kernel_source: Literal["trunk", "mlp", "routing"]
    kernel_activation: Literal["softmax", "sigmoid"] = "softmax"
    bias: bool = True
    gate_temperature: float | None = None
    kernel_temperature: float | None = None

    @property
    def has_trunk(self) -> bool:
        return bool(self.gates) or self.kernel_source == "trunk"


class DynamicConv2d(nn.Module):
    """Base class of the dynamic convolutions; a drop-in replacement for :class:`torch.nn.Conv2d`.

    Subclasses set :attr:`spec`. Constructor arguments are nn.Conv2d's, followed by the method's
    options, each ``None`` meaning the paper's default; an option that the method has no use for
    (e.g. ``reduction`` for DyConv, which has no gate trunk) raises a ``ValueError``.

    Args:
        kernel_num: number of static kernels n (``K`` / experts in the papers).
        reduction: gate-trunk width as a fraction of ``in_channels`` (default 1/16) ...
        min_channels: ... but at least this many channels (default 16).
        hidden_ratio: width of the kernel MLP as a fraction of ``in_channels`` (default 0.25) ...
        hidden_extra: ... plus this many units (default 1, as in the current DyConv code; 0 gives the
            narrower MLP whose counts the ODConv paper reports for DyConv). The width is
            ``kernel_num`` when ``in_channels`` is 3, as in the DyConv code.
        gate_temperature, kernel_temperature: initial temperatures (defaults: the spec's).
        shared_routing: (CondConv only) the routing weights come from outside: a routing function
            computed once per block and shared by its convolutions, as in the CondConv paper's
            MobileNetV2 (see :class:`~fmdconv.layers.attention.SharedRouting`). The layer then has no
            routing of its own, and ``forward`` takes the (B, n) weights as ``kernel_attention``.
        attention_init: ``"zero"`` (default): the last layer of every attention path starts at zero,
            so the gates start at 1/2 and the kernel softmax uniform (CondConv's routing weights at
            1/2), and training at temperature 1 does not collapse; ``"authors"``: Kaiming normal
            (fan_out) everywhere, as the authors' code (docs/training.md explains the difference).

    Attributes:
        weight: the n static kernels, (n, C_out, C_in/groups, kh, kw).
        bias: per-kernel biases (n, C_out), or None.
        formulation: ``"auto"`` (the cheapest exact one per call: measured once per call signature
            where benchmarking is on, else the hand rule) or one of ``"grouped"``, ``"mixed"``,
            ``"matmul"``, ``"triton"`` (see :mod:`fmdconv.layers.formulations`).
        fold_attentions: True (default) lets a formulation fold the input and output attentions
            into per-sample kernels where that touches less memory; False scales the feature maps
            with them, as the authors' code does (the speed benchmark's naive baseline).
        disabled_attentions: attentions switched off for ablations; each then counts as 1.
    """

    spec: ClassVar[DynamicConvSpec]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: PaddingArg = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool | None = None,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        kernel_num: int = 4,
        reduction: float | None = None,
        min_channels: int | None = None,
        hidden_ratio: float | None = None,
        hidden_extra: int | None = None,
        gate_temperature: float | None = None,
        kernel_temperature: float | None = None,
        shared_routing: bool = False,
        attention_init: str = "zero",
        **unexpected: Any,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if unexpected:
            # Named after the layer the user built, not this shared base class.
            raise TypeError(
                f"{name}.__init__() got an unexpected keyword argument {next(iter(unexpected))!r}"
            )
        spec = self.spec
        check_attention_init(attention_init, name)
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not is_int_at_least(value, 1):
                raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: groups={groups} must divide in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        check_int(name, "kernel_num", kernel_num)
        if not isinstance(shared_routing, bool):
            raise ValueError(f"{name}: shared_routing must be True or False, got {shared_routing!r}")
        if shared_routing and spec.kernel_source != "routing":
            raise ValueError(
                f"{name}: shared_routing is for CondConv's sigmoid routing; {name} normalises its kernel "
                "attention with a temperature, which an attention given from outside would bypass"
            )
        self._reject_unused_options(
            reduction=(reduction, spec.has_trunk),
            min_channels=(min_channels, spec.has_trunk),
            hidden_ratio=(hidden_ratio, spec.kernel_source == "mlp"),
            hidden_extra=(hidden_extra, spec.kernel_source == "mlp"),
            gate_temperature=(gate_temperature, spec.gate_temperature is not None),
            kernel_temperature=(kernel_temperature, spec.kernel_temperature is not None),
        )
        reduction = 1 / 16 if reduction is None else reduction
        min_channels = 16 if min_channels is None else min_channels
        hidden_ratio = 0.25 if hidden_ratio is None else hidden_ratio
        hidden_extra = 1 if hidden_extra is None else hidden_extra
        for option, value in (("reduction", reduction), ("hidden_ratio", hidden_ratio)):
            if not is_number(value) or not 0 < value <= 1:
                raise ValueError(f"{name}: {option} must be a number in (0, 1], got {value!r}")
        check_int(name, "min_channels", min_channels)
        check_int(name, "hidden_extra", hidden_extra, minimum=0)

        self.in_channels = in_channels
        self.out_channels = out_channels
        _, self._geometry = set_conv_arguments(
            self, kernel_size, stride, padding, dilation, groups, padding_mode
        )
        self.kernel_num = kernel_num
        self.shared_routing = shared_routing
        self.attention_init = attention_init
        self._formulation = "auto"
        self._choices = LayerChoices()
        self.fold_attentions = True
        self.disabled_attentions: set[str] = set()

        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(kernel_num, out_channels, in_channels // groups, *self.kernel_size, **factory)
        )
        use_bias = spec.bias if bias is None else bias
        self.bias = nn.Parameter(torch.empty(kernel_num, out_channels, **factory)) if use_bias else None

        heads = self._gate_heads(kernel_num, shared_routing)
        trunk_width = max(int(in_channels * reduction), min_channels)
        paths = {**factory, "attention_init": attention_init}
        self.gate = GateTrunk(in_channels, trunk_width, heads, **paths) if heads else None
        self.kernel_path: nn.Module | None = None
        own_kernel_attention = self._has_kernel_attention(kernel_num) and not shared_routing
        if own_kernel_attention and spec.kernel_source == "mlp":
            hidden = (
                kernel_num if in_channels == 3 else max(1, int(in_channels * hidden_ratio) + hidden_extra)
            )
            self.kernel_path = KernelMLP(in_channels, hidden, kernel_num, **paths)
        elif own_kernel_attention and spec.kernel_source == "routing":
            self.kernel_path = KernelRouting(in_channels, kernel_num, **paths)

        for buffer_name, default, value in (
            ("gate_temperature", spec.gate_temperature, gate_temperature),
            ("kernel_temperature", spec.kernel_temperature, kernel_temperature),
        ):
            if default is not None:
                value = default if value is None else value
                if not is_number(value) or not value > 0:
                    raise ValueError(f"{name}: {buffer_name} must be a number > 0, got {value!r}")
                self.register_buffer(buffer_name, torch.tensor(float(value), **factory))
        self.reset_parameters()

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Self:
        # Module.to(memory_format=torch.channels_last) converts every 4-D and 5-D tensor, and a 5-D
        # one cannot be channels_last: convert the n kernels as one 4-D stack (n * C_out, ...) then.
        def convert(t: Tensor) -> Tensor:
            if t.dim() != 5:
                return fn(t)
            try:
                return fn(t)
            except RuntimeError:
                return fn(t.flatten(0, 1)).unflatten(0, t.shape[:2])

        return super()._apply(convert, recurse)

    def _reject_unused_options(self, **options: tuple[Any, bool]) -> None:
        for option, (value, applies) in options.items():
            if value is not None and not applies:
                raise ValueError(f"{type(self).__name__} has no use for {option} (got {value!r})")

    def _has_kernel_attention(self, kernel_num: int) -> bool:
        # As in the authors' code: ODConv skips its trunk's kernel head at n = 1 (a softmax over one
        # kernel is constantly 1), while DyConv and FMDConv keep their kernel MLP (whose softmax is
        # then 1, so the forward is a static convolution) and CondConv's sigmoid routing still scales.
        return kernel_num > 1 or self.spec.kernel_source != "trunk"

    def _gate_heads(self, kernel_num: int, shared_routing: bool) -> dict[str, int]:
        spec = self.spec
        depthwise = self.in_channels == self.out_channels == self.groups
        sizes = {
            "input": self.in_channels,
            "output": None if depthwise else self.out_channels,
            "spatial": None if self.kernel_size == (1, 1) else self.kernel_size[0] * self.kernel_size[1],
        }
        heads = {gate: sizes[gate] for gate in spec.gates if sizes[gate] is not None}
        if spec.kernel_source == "trunk" and self._has_kernel_attention(kernel_num) and not shared_routing:
            heads["kernel"] = kernel_num
        return heads

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, relu) kernels, zero biases, and attention paths as ``attention_init``."""
        for kernel in self.weight.data:
            nn.init.kaiming_normal_(kernel, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        for path in (self.gate, self.kernel_path):
            if path is not None:
                path.reset_parameters()

    @property
    def formulation(self) -> str:
        """How the layer computes its convolution: ``"auto"`` or another name of
        :data:`~fmdconv.layers.formulations.FORMULATIONS`; checked on assignment."""
        return self._formulation

    @formulation.setter
    def formulation(self, value: str) -> None:
        if value not in FORMULATIONS:
            raise ValueError(
                f"{type(self).__name__}.formulation must be one of {', '.join(FORMULATIONS)}; got {value!r}"
            )
        if value == "mixed" and "spatial" in self.available_attentions:
            raise ValueError(
                f"formulation='mixed' is not exact for {type(self).__name__} (spatial attention); "
                f"use one of {', '.join(f for f in FORMULATIONS if f != 'mixed')}"
            )
        self._formulation = value

    @property
    def available_attentions(self) -> tuple[str, ...]:
        """The attentions this layer computes (before any ablation)."""
        names = set(self.gate.heads) if self.gate is not None else set()
        if self.kernel_path is not None or self.shared_routing:
            names.add("kernel")
        return tuple(n for n in ATTENTION_NAMES if n in names)

    def set_temperature(self, gate: float | None = None, kernel: float | None = None) -> None:
        """Set the temperatures this layer has; None leaves a value unchanged."""
        for buffer_name, value in (("gate_temperature", gate), ("kernel_temperature", kernel)):
            if value is None or not hasattr(self, buffer_name):
                continue
            if not value > 0:
                raise ValueError(f"{buffer_name} must be > 0, got {value!r}")
            getattr(self, buffer_name).fill_(float(value))

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__}: expected a 4-D input (B, C, H, W) or a 3-D one (C, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        check_input_dtype(type(self).__name__, x, self.weight.dtype)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected an input with in_channels={self.in_channels} channels, "
                f"got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        minimum = self._geometry.minimum_input_size()
        if x.shape[-2] < minimum[0] or x.shape[-1] < minimum[1]:
            raise ValueError(
                f"{type(self).__name__}: the input map is smaller than the kernel: kernel_size="
                f"{self.kernel_size}, dilation={self.dilation} and padding={self.padding} need an input "
                f"of at least {minimum[0]}x{minimum[1]} (H x W), got {x.shape[-2]}x{x.shape[-1]}"
            )

    def _check_kernel_attention(self, x: Tensor, kernel_attention: Tensor | None, unbatched: bool) -> None:
        """Check the block's routing for ``x`` (batched); ``unbatched``: the caller gave a 3-D input."""
        name = type(self).__name__
        if not self.shared_routing:
            if kernel_attention is not None:
                raise ValueError(
                    f"{name} computes its own kernel attention: kernel_attention is only for layers "
                    "built with shared_routing=True"
                )
            return
        expected, described = (
            ((self.kernel_num,), "(kernel_num,) for an unbatched input")
            if unbatched
            else ((x.shape[0], self.kernel_num), "(batch, kernel_num)")
        )
        if kernel_attention is None or tuple(kernel_attention.shape) != expected:
            got = None if kernel_attention is None else tuple(kernel_attention.shape)
            raise ValueError(
                f"{name} was built with shared_routing=True: pass the block's routing as "
                f"kernel_attention, shape {described} = {expected}, got {got}"
            )
        if kernel_attention.device != x.device:  # dtypes may differ under autocast
            raise ValueError(
                f"{name}: kernel_attention must be on the input's device {x.device}, "
                f"got {kernel_attention.device}"
            )

    def normalise_gate(self, logits: Tensor) -> Tensor:
        """A sigmoid gate (input, output, spatial) from its logits: ``sigmoid(logits / gate_temperature)``."""
        return torch.sigmoid(logits / self.gate_temperature)

    def normalise_kernel(self, logits: Tensor) -> Tensor:
        """The kernel attention (B, n) from its logits: a softmax at the kernel temperature, or
        CondConv's sigmoid routing (``spec.kernel_activation``)."""
        if self.spec.kernel_activation == "softmax":
            return F.softmax(logits / self.kernel_temperature, dim=1)
        return torch.sigmoid(logits)

    def _attentions(self, x: Tensor, kernel_attention: Tensor | None = None) -> dict[str, Tensor]:
        """The enabled attentions for a batched ``x``; a disabled one is not computed at all."""
        attentions: dict[str, Tensor] = {}
        disabled = self.disabled_attentions
        kernel_logits = None
        gate, kernel_path = self.gate, self.kernel_path
        if kernel_path is not None and "kernel" in disabled:
            kernel_path = None
        names = () if gate is None else tuple(name for name in gate.heads if name not in disabled)
        if names or kernel_path is not None:  # a shared-routing CondConv has neither
            pooled = x.mean((2, 3))
            if names:
                # Every head in one product; the gates come first and share one sigmoid.
                assert gate is not None
                logits = gate(pooled, names)
                gates = names[:-1] if names[-1] == "kernel" else names
                if len(gates) < len(names):  # the kernel head's n logits come last
                    if gates:
                        width = logits.shape[1] - self.kernel_num
                        logits, kernel_logits = logits.split([width, self.kernel_num], dim=1)
                    else:
                        kernel_logits = logits
                if gates:
                    values = self.normalise_gate(logits)
                    attentions.update(gate.split(values, gates) if len(gates) > 1 else {gates[0]: values})
            if kernel_path is not None:
                kernel_logits = kernel_path(pooled)
        if kernel_attention is not None:
            if "kernel" not in disabled:
                attentions["kernel"] = kernel_attention
        elif kernel_logits is not None:
            attentions["kernel"] = self.normalise_kernel(kernel_logits)
        if "spatial" in attentions:
            attentions["spatial"] = attentions["spatial"].view(-1, *self.kernel_size)
        return attentions

    def _batched(self, x: Tensor, kernel_attention: Tensor | None) -> tuple[Tensor, Tensor | None, bool]:
        """``x`` and ``kernel_attention`` with a batch dimension, checked, and whether it was added."""
        unbatched = x.dim() == 3
        x = x.unsqueeze(0) if unbatched else x
        self._check_input(x)
        self._check_kernel_attention(x, kernel_attention, unbatched)
        if unbatched and kernel_attention is not None:
            kernel_attention = kernel_attention.unsqueeze(0)
        return x, kernel_attention, unbatched

    def attentions(self, x: Tensor, kernel_attention: Tensor | None = None) -> dict[str, Tensor]:
        """The attentions for input ``x``: a dict with only those this layer has (and has enabled).

        Keys: ``input`` (B, C_in), ``output`` (B, C_out), ``spatial`` (B, kh, kw), ``kernel`` (B, n).
        ``kernel_attention``: the block's routing, for layers built with ``shared_routing=True``.
        """
        x, kernel_attention, unbatched = self._batched(x, kernel_attention)
        attentions = self._attentions(x, kernel_attention)
        return {k: v[0] for k, v in attentions.items()} if unbatched else attentions

    def forward(self, x: Tensor, kernel_attention: Tensor | None = None) -> Tensor:
        """Convolve ``x`` (B, C_in, H, W) or (C_in, H, W).

        ``kernel_attention`` (B, n), or (n,) for an unbatched ``x``, is required by layers built with
        ``shared_routing=True`` (the routing of their block) and refused by the others.
        """
        x, kernel_attention, unbatched = self._batched(x, kernel_attention)
        if x.shape[0] == 0:  # an empty batch gives an empty output, as nn.Conv2d does
            return x.new_empty(0, self.out_channels, *self._geometry.output_size(x.shape[-2], x.shape[-1]))
        attentions = self._attentions(x, kernel_attention)
        on_maps: dict[str, Tensor] = {}
        if not self.fold_attentions:
            on_maps = {name: attentions.pop(name) for name in ("input", "output") if name in attentions}
            x = scale_channels(x, on_maps.get("input"))
        formulation = self.formulation
        if formulation == "auto":
            formulation = select_formulation(
                x, self.weight, self.bias, attentions, self._geometry, self.training, self._choices
            )
        y = CONVOLUTIONS[formulation](x, self.weight, self.bias, attentions, self._geometry)
        y = scale_channels(y, on_maps.get("output"))
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"kernel_num={self.kernel_num}"
        )
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        if self.shared_routing:
            text += ", shared_routing=True"
        return text


def set_formulation(model: nn.Module, formulation: str) -> int:
    """Force one formulation (or ``"auto"``) on every dynamic layer of ``model``; returns their count."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {', '.join(FORMULATIONS)}; got {formulation!r}")
    layers = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    previous = [layer.formulation for layer in layers]
    try:
        for layer in layers:
            layer.formulation = formulation
    except ValueError:
        for layer, value in zip(layers, previous, strict=True):
            layer.formulation = value
        raise
    return len(layers)


def set_attentions(model: nn.Module, **enabled: bool) -> int:
    """Switch attentions on (True) or off (False) in every dynamic layer, for ablations.

    Keywords: ``input``, ``output``, ``spatial``, ``kernel``. A disabled attention counts as 1 in the
    layer's formula: for a softmax kernel attention that means the plain sum of the n kernels.
    Returns the number of dynamic layers changed.
    """
    unknown = set(enabled) - set(ATTENTION_NAMES)
    if unknown:
        raise ValueError(f"unknown attention(s) {sorted(unknown)}; accepted: {ATTENTION_NAMES}")
    layers = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    for layer in layers:
        for name, on in enabled.items():
            (layer.disabled_attentions.discard if on else layer.disabled_attentions.add)(name)
    return len(layers)


def disabled_attentions(model: nn.Module) -> dict[str, list[str]]:
    """The attentions switched off in each dynamic layer of ``model`` (module name -> names), for
    checkpoints: ``state_dict()`` does not hold them. Layers with every attention on are left out."""
    return {
        name: sorted(module.disabled_attentions)
        for name, module in model.named_modules()
        if isinstance(module, DynamicConv2d) and module.disabled_attentions
    }


def restore_disabled_attentions(model: nn.Module, disabled: Mapping[str, Sequence[str]]) -> None:
    """Switch off exactly the attentions that :func:`disabled_attentions` listed (all others on)."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, DynamicConv2d)}
    unknown = sorted(set(disabled) - set(layers))
    if unknown:
        raise ValueError(f"disabled names no dynamic layer of the model: {', '.join(unknown)}")
    for name, layer in layers.items():
        names = set(disabled.get(name, ()))
        if names - set(ATTENTION_NAMES):
            raise ValueError(
                f"disabled[{name!r}]: unknown attention(s) {sorted(names - set(ATTENTION_NAMES))}; "
                f"accepted: {', '.join(ATTENTION_NAMES)}"
            )
        layer.disabled_attentions = names
