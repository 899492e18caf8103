"""KernelWarehouse: kernels assembled from cells of a warehouse shared by the layers of a stage.

Li, Yao. "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024 (code:
OSVAI/KernelWarehouse). Every kernel W (C_out x C_in/g x kh x kw) is cut into m disjoint cells of
``cell_out x cell_in x 1 x 1`` (every tap of a 3x3 kernel its own cell), and each cell is a mixture

    w_j = sum_i alpha_ji e_i,   i = 1..n,

of the n cells ``e_i`` of a :class:`Warehouse`, which the convolutions of a stage share (the cell
planes are the greatest common divisors of their channels, times ``cell_in_ratio`` /
``cell_out_ratio``; n is ``cell_num_ratio`` times the cells the stage's kernels have). The attention
("contrasting-driven attention function") is

    z = FC2(ReLU(BN(FC1(GAP(x)))))           (B, m, n + 1): one extra "zero cell" per mixture
    z_j <- z_j / (sum_i |z_ji| + 1e-3)       per mixture j
    alpha = (1 - tau) z + tau beta           beta: a fixed one-hot assignment of cells
    alpha <- alpha without the zero cell     (B, m, n)

with FC1 ``C_in -> max(C_in * reduction, 16)`` (no bias; reduction 1/16) and the temperature tau
annealed from 1 to 0 (:func:`~fmdconv.layers.set_temperature` with ``kernel=tau``; the papers'
schedule, :func:`kw_schedule`). beta gives mixture j of a layer its own warehouse cell (with
``cell_num_ratio < 1`` only some mixtures get one, the others the zero cell), so at tau = 1 the
layers start as static convolutions over disjoint cells. ``nonlocal_basis_ratio < 1`` factorises
the logits of the cells that belong to other layers through a small basis (FC3), as the authors'
ResNet-50 1/2x does. The formulas, defaults and the authors' layout are in docs/models.md.

KernelWarehouse is not a mixture of n whole kernels (its attention has m x (n + 1) entries per
sample and its parameters live in a warehouse outside the layer), so it is its own module beside
:class:`~fmdconv.layers.DynamicConv2d` (docs/models.md). Its per-sample kernel is built with one
batched product ``alpha @ cells`` of exactly the kernel's size, and convolved with the per-sample
formulations of :mod:`fmdconv.layers.formulations` (``grouped`` or ``matmul``, chosen per call).
The warehouse, its attention, the layer and the linear layer are one algorithm whose parts share the
cell layout, so they stay in one module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv.layers.formulations import (
    convolve_each_sample,
    per_sample_formulation,
)
from fmdconv.layers.helpers import (
    IntPair,
    PaddingArg,
    batch_norm,
    check_int,
    is_number,
    kernel_elements,
    set_conv_arguments,
)

KW_ATTENTION_NAMES = ("cell",)
KW_FORMULATIONS = ("auto", "grouped", "matmul")
# The normaliser's epsilon and the attention's minimum hidden width, as in the authors' code.
NORMALISER_EPS = 1e-3
MIN_HIDDEN = 16
MIN_BASIS = 16
KW_WARM_EPOCHS = 20.0  # tau anneals 1 -> 0 over these epochs (the authors' MobileNetV2: 15)

KernelShape = tuple[int, int, int, int]  # (C_out, C_in / groups, kh, kw)


def _check_ratio(owner: str, name: str, value: object) -> float:
    if not is_number(value) or not value > 0:  # type: ignore[operator]
        raise ValueError(f"{owner}: {name} must be a number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def cell_mixtures(shape: KernelShape, cell_out: int, cell_in: int) -> int:
    """m, the cells a kernel of ``shape`` (C_out, C_in/g, kh, kw) is cut into."""
    out_channels, in_per_group, kh, kw = shape
    return (out_channels // cell_out) * (in_per_group // cell_in) * kh * kw


class Warehouse(nn.Module):
    """The n shared cells of KernelWarehouse, ``cells`` (n, cell_out, cell_in, 1, 1).

    Model-level state: the :class:`KWConv2d` layers of a stage hold a reference to one warehouse
    (which the model registers once, so it is counted and saved once); a layer built without one
    owns a private warehouse. Build it from the kernels it serves with :meth:`for_kernels`.

    Args:
        num_cells: n.
        cell_out, cell_in: the cell's output and input channels.
        cell_num_ratio: n over the number of cells of the kernels it serves (the attention uses it
            to tell a layer's own cells from the others, and the one-hot assignment from it).
        spatial_dims: the cells' trailing 1s: 2 (default) for convolutions, 1 for the warehouse of a
            :class:`KWLinear` (the authors' 1-D cells, so that their checkpoints load unchanged).
    """

    def __init__(
        self,
        num_cells: int,
        cell_out: int,
        cell_in: int,
        cell_num_ratio: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        for name, value in (("num_cells", num_cells), ("cell_out", cell_out), ("cell_in", cell_in)):
            check_int("Warehouse", name, value)
        if spatial_dims not in (1, 2):
            raise ValueError(f"Warehouse: spatial_dims must be 1 or 2, got {spatial_dims!r}")
        self.cell_num_ratio = _check_ratio("Warehouse", "cell_num_ratio", cell_num_ratio)
        shape = (num_cells, cell_out, cell_in, *(1,) * spatial_dims)
        self.cells = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        # (start, end) cell ranges assigned to the layers, in order; reset_parameters uses them.
        self.layer_ranges: list[tuple[int, int]] = []
        self.reset_parameters()

    @classmethod
    def for_kernels(
        cls,
        shapes: Sequence[KernelShape],
        cell_num_ratio: float = 1.0,
        cell_in_ratio: float = 1.0,
        cell_out_ratio: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        spatial_dims: int = 2,
    ) -> Warehouse:
        """The warehouse of the kernels ``shapes`` (C_out, C_in/g, kh, kw each), as the authors size it.

        Cell planes ``max(int(gcd * ratio), 1)`` of the gcds of the output and of the input channels;
        n = ``max(int(total cells * cell_num_ratio), 1)``. ``spatial_dims``: as in the constructor.
        """
        if not shapes:
            raise ValueError("Warehouse.for_kernels: shapes must name at least one kernel")
        for name, value in (("cell_in_ratio", cell_in_ratio), ("cell_out_ratio", cell_out_ratio)):
            _check_ratio("Warehouse", name, value)
        ratio = _check_ratio("Warehouse", "cell_num_ratio", cell_num_ratio)
        cell_out = max(int(reduce(math.gcd, (s[0] for s in shapes)) * cell_out_ratio), 1)
        cell_in = max(int(reduce(math.gcd, (s[1] for s in shapes)) * cell_in_ratio), 1)
        total = sum(cell_mixtures(s, cell_out, cell_in) for s in shapes)
        return cls(max(int(total * ratio), 1), cell_out, cell_in, ratio, device, dtype, spatial_dims)

    @property
    def num_cells(self) -> int:
        return self.cells.shape[0]

    @property
    def cell_out(self) -> int:
        return self.cells.shape[1]

    @property
    def cell_in(self) -> int:
        return self.cells.shape[2]

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, relu) cells, each layer's range on its own, as the authors do."""
        ranges = self.layer_ranges or [(0, self.num_cells)]
        for start, end in ranges:
            block = self.cells.data[start:end].view(-1, self.cell_in, 1, 1)
            nn.init.kaiming_normal_(block, mode="fan_out", nonlinearity="relu")

    def extra_repr(self) -> str:
        return (
            f"num_cells={self.num_cells}, cell={tuple(self.cells.shape[1:])}, "
            f"cell_num_ratio={self.cell_num_ratio:g}"
        )


def cell_assignment(mixtures: int, num_cells: int, start: int, cell_num_ratio: float) -> tuple[Tensor, int]:
    """beta (m, n + 1), the one-hot cell of each mixture at tau = 1, and the next free cell.

    With ``cell_num_ratio >= 1`` mixture j takes cell ``start + j * int(ratio)``; below 1, with
    k = int(1 / ratio), mixture j takes the next free cell when ``j % k == (j // k) % k`` and the zero
    cell (column n) otherwise: the authors' rule.
    """
    per_cell = 1 if cell_num_ratio >= 1.0 else int(1.0 / cell_num_ratio)
    step = int(cell_num_ratio) if cell_num_ratio >= 1.0 else 1
    owners = [j for j in range(mixtures) if j % per_cell == (j // per_cell) % per_cell]
    end = start + len(owners) * step
    if end > num_cells:
        raise ValueError(
            f"the warehouse has {num_cells} cells; a layer of {mixtures} cells at cell_num_ratio "
            f"{cell_num_ratio:g} starting at cell {start} needs cells {start}..{end - 1}"
        )
    beta = torch.zeros(mixtures, num_cells + 1)
    beta[:, num_cells] = 1.0  # the zero cell, for the mixtures without a cell of their own
    for rank, j in enumerate(owners):
        beta[j, num_cells] = 0.0
        beta[j, start + rank * step] = 1.0
    return beta, end


class KWAttention(nn.Module):
    """The attention of a :class:`KWConv2d`: pooled input (B, C_in) -> normalised logits (B, m, n + 1).

    FC1 (no bias) -> BN -> ReLU -> FC2 to m * (n + 1) logits; with ``num_basis`` (the nonlocal
    basis), FC2 gives per mixture the logits of the layer's own ``num_local`` cells, ``num_basis``
    basis logits and the zero cell's, FC3 maps the basis to the other ``n - num_local`` cells, and a
    bias ``basis_bias`` (m * (n + 1)) is added. Module names are the authors'. At batch size 1 in
    training mode the BatchNorm normalises with its running statistics (a single vector has no batch
    statistics; the authors' code fails there), as the other methods' trunks do.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        mixtures: int,
        num_cells: int,
        num_local: int,
        start_cell: int,
        num_basis: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.mixtures, self.num_cells = mixtures, num_cells
        self.num_local, self.start_cell, self.num_basis = num_local, start_cell, num_basis
        self.fc1 = nn.Linear(in_channels, hidden, bias=False, **factory)
        self.norm1 = nn.BatchNorm1d(hidden, **factory)
        if num_basis is None:
            self.fc2 = nn.Linear(hidden, mixtures * (num_cells + 1), **factory)
        else:
            self.fc2 = nn.Linear(hidden, mixtures * (num_local + num_basis + 1), bias=False, **factory)
            self.fc3 = nn.Linear(num_basis, num_cells - num_local, bias=False, **factory)
            self.basis_bias = nn.Parameter(torch.zeros(mixtures * (num_cells + 1), **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, relu) FCs, zero biases, unit BatchNorm (the authors' init)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.norm1.reset_running_stats()
        self.norm1.reset_parameters()
        if self.num_basis is not None:
            nn.init.zeros_(self.basis_bias)

    def forward(self, pooled: Tensor) -> Tensor:
        hidden = self.fc1(pooled)
        hidden = batch_norm(self.norm1, hidden)
        logits = self.fc2(F.relu(hidden))
        if self.num_basis is None:
            logits = logits.view(-1, self.mixtures, self.num_cells + 1)
        else:
            logits = logits.view(-1, self.mixtures, self.num_local + self.num_basis + 1)
            local = logits[..., : self.num_local]
            others = self.fc3(logits[..., self.num_local : -1])
            start = self.start_cell
            logits = torch.cat([others[..., :start], local, others[..., start:], logits[..., -1:]], dim=-1)
            logits = logits + self.basis_bias.view(self.mixtures, self.num_cells + 1)
        return logits / (logits.abs().sum(-1, keepdim=True) + NORMALISER_EPS)


class KWConv2d(nn.Module):
    """KernelWarehouse convolution (Li & Yao, ICML 2024); a drop-in for nn.Conv2d.

    Each sample's kernel is assembled from cells mixed out of a :class:`Warehouse` (see the module
    docstring for the formulas). The constructor takes nn.Conv2d's arguments, then KernelWarehouse's
    options.

    Args:
        bias: a static bias (default False, as in the authors' code; ``None`` means that default).
        warehouse: the shared :class:`Warehouse` to draw cells from; ``None`` (the default) builds a
            private one for this kernel alone (registered as ``self.warehouse``), so the layer
            stands on its own. A shared warehouse is only referenced: register it once in the model.
        start_cell: the first of this layer's own cells in a shared warehouse (its one-hot
            assignment at tau = 1 starts there; :attr:`end_cell` is the next layer's).
        cell_num_ratio, cell_in_ratio, cell_out_ratio: the private warehouse's settings (default 1;
            see :meth:`Warehouse.for_kernels`); a shared warehouse has its own.
        reduction: FC1's width is ``max(int(C_in * reduction), 16)`` (default 1/16).
        nonlocal_basis_ratio: below 1, the logits of the other layers' cells come through a basis
            of ``max(int(their number * ratio), 16)`` (default 1: no basis).
        temperature: the initial tau (default 1, where the schedule starts; 0 is the finished model).
        formulation: ``"auto"`` (default: ``matmul`` for 1x1 kernels, small maps and export,
            ``grouped`` otherwise), ``"grouped"`` or ``"matmul"``; all exact.

    Attributes:
        attention: the :class:`KWAttention`. ``kernel_temperature``: tau, a buffer.
        mixtures: m, the cells of this layer's kernel. ``assignment``: beta (m, n + 1), a
            non-persistent buffer (derived from the warehouse, not saved).
        warm_epochs: the epochs over which the papers' schedule anneals tau to 0 (20; the authors'
            MobileNetV2 15), read by :func:`~fmdconv.layers.paper_schedules`.

    Shape:
        - Input: (B, C_in, H, W) or (C_in, H, W)
        - Output: (B, C_out, H_out, W_out) or (C_out, H_out, W_out), as nn.Conv2d.

    Examples:
        >>> import torch
        >>> from fmdconv.layers import KWConv2d
        >>> conv = KWConv2d(16, 32, 3, padding=1, cell_num_ratio=4)
        >>> conv(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
        >>> conv.warehouse.cells.shape  # 9 taps x 4: n = 36 cells of 32 x 16
        torch.Size([36, 32, 16, 1, 1])
        >>> conv.attentions(torch.randn(2, 16, 8, 8))["cell"].shape  # (B, m, n)
        torch.Size([2, 9, 36])
    """

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
        warehouse: Warehouse | None = None,
        start_cell: int = 0,
        cell_num_ratio: float | None = None,
        cell_in_ratio: float | None = None,
        cell_out_ratio: float | None = None,
        reduction: float = 0.0625,
        nonlocal_basis_ratio: float = 1.0,
        temperature: float = 1.0,
        formulation: str = "auto",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_int(name, "in_channels", in_channels)
        check_int(name, "out_channels", out_channels)
        check_int(name, "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                f"divisible by groups ({groups})"
            )
        _check_ratio(name, "reduction", reduction)
        _check_ratio(name, "nonlocal_basis_ratio", nonlocal_basis_ratio)
        self.in_channels, self.out_channels = in_channels, out_channels
        _, self._geometry = set_conv_arguments(
            self, kernel_size, stride, padding, dilation, groups, padding_mode
        )
        self.formulation = formulation
        shape: KernelShape = (out_channels, in_channels // groups, *self.kernel_size)
        factory = {"device": device, "dtype": dtype}

        ratios = {
            "cell_num_ratio": cell_num_ratio,
            "cell_in_ratio": cell_in_ratio,
            "cell_out_ratio": cell_out_ratio,
        }
        if warehouse is None:
            if start_cell != 0:
                raise ValueError(f"{name}: start_cell applies to a shared warehouse only, got {start_cell!r}")
            warehouse = Warehouse.for_kernels(
                [shape], **{k: 1.0 if v is None else v for k, v in ratios.items()}, **factory
            )
            self.warehouse: Warehouse | None = warehouse
            self._shared: tuple[Warehouse, ...] = ()
        else:
            if not isinstance(warehouse, Warehouse):
                raise TypeError(
                    f"{name}: warehouse must be a Warehouse or None, got {type(warehouse).__name__}"
                )
            given = sorted(k for k, v in ratios.items() if v is not None)
            if given:
                raise ValueError(f"{name}: {', '.join(given)} belong to the warehouse when one is given")
            if out_channels % warehouse.cell_out or (in_channels // groups) % warehouse.cell_in:
                raise ValueError(
                    f"{name}: the warehouse's cells ({warehouse.cell_out} x {warehouse.cell_in}) do not "
                    f"tile a kernel of {out_channels} x {in_channels // groups} channels"
                )
            self.warehouse = None
            self._shared = (warehouse,)  # a reference, not a submodule: the model registers it once
        self.mixtures = cell_mixtures(shape, warehouse.cell_out, warehouse.cell_in)
        num_cells, ratio = warehouse.num_cells, warehouse.cell_num_ratio
        if not (isinstance(start_cell, int) and 0 <= start_cell < num_cells):
            raise ValueError(f"{name}: start_cell must be an int in [0, {num_cells}), got {start_cell!r}")
        beta, self.end_cell = cell_assignment(self.mixtures, num_cells, start_cell, ratio)
        self.start_cell = start_cell
        if self.warehouse is not None:
            self.warehouse.layer_ranges = [(0, self.end_cell)]
            self.warehouse.reset_parameters()
        self.register_buffer("assignment", beta.to(**factory), persistent=False)
        num_local = int(ratio * self.mixtures)
        num_basis = None
        if nonlocal_basis_ratio < 1.0:
            num_basis = max(int((num_cells - num_local) * nonlocal_basis_ratio), MIN_BASIS)
        hidden = max(int(in_channels * reduction), MIN_HIDDEN)
        self.attention = KWAttention(
            in_channels, hidden, self.mixtures, num_cells, num_local, start_cell, num_basis, **factory
        )
        self.bias = nn.Parameter(torch.zeros(out_channels, **factory)) if bias else None
        self.register_buffer("kernel_temperature", torch.tensor(0.0, **factory))
        self.set_temperature(kernel=temperature)
        self.warm_epochs: float = KW_WARM_EPOCHS

    @property
    def cells(self) -> Tensor:
        """The warehouse's cells (n, cell_out, cell_in, 1, 1), private or shared."""
        return (self.warehouse if self.warehouse is not None else self._shared[0]).cells

    @property
    def shared_warehouse(self) -> Warehouse | None:
        """The shared warehouse this layer references, or None when it owns a private one."""
        return self._shared[0] if self._shared else None

    @property
    def formulation(self) -> str:
        """``"auto"``, ``"grouped"`` or ``"matmul"``; checked on assignment."""
        return self._formulation

    @formulation.setter
    def formulation(self, value: str) -> None:
        if value not in KW_FORMULATIONS:
            raise ValueError(
                f"{type(self).__name__}.formulation must be one of "
                f"{', '.join(KW_FORMULATIONS)}; got {value!r}"
            )
        self._formulation = value

    @property
    def available_attentions(self) -> tuple[str, ...]:
        """The attentions this layer computes: ``cell``, alpha (B, m, n)."""
        return KW_ATTENTION_NAMES

    def reset_parameters(self) -> None:
        """The attention as the authors initialise it, a zero bias, and a private warehouse's cells
        (a shared warehouse is the model's to reset)."""
        self.attention.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.warehouse is not None:
            self.warehouse.reset_parameters()

    def set_temperature(self, gate: float | None = None, kernel: float | None = None) -> None:
        """Set tau (``kernel``, in [0, 1]); None leaves it unchanged. There is no gate temperature."""
        if kernel is None:
            return
        if not is_number(kernel) or not 0.0 <= kernel <= 1.0:
            raise ValueError(
                f"{type(self).__name__}: kernel temperature tau must be in [0, 1], got {kernel!r}"
            )
        self.kernel_temperature.fill_(float(kernel))

    def _batched(self, x: Tensor) -> tuple[Tensor, bool]:
        unbatched = x.dim() == 3
        x = x.unsqueeze(0) if unbatched else x
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected an input (B, {self.in_channels}, H, W) or "
                f"({self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        return x, unbatched

    def _cell_attention(self, x: Tensor) -> Tensor:
        normalised = self.attention(x.mean((2, 3)))
        tau = self.kernel_temperature
        blended = (1.0 - tau) * normalised + tau * self.assignment.to(normalised.dtype)
        return blended[..., :-1]

    def attentions(self, x: Tensor) -> dict[str, Tensor]:
        """alpha for input ``x``: ``{"cell": (B, m, n)}`` (no batch dim for a 3-D ``x``)."""
        x, unbatched = self._batched(x)
        alpha = self._cell_attention(x)
        return {"cell": alpha[0] if unbatched else alpha}

    def per_sample_kernel(self, alpha: Tensor) -> Tensor:
        """The kernels (B, C_out, C_in/g, kh, kw) for cell attentions ``alpha`` (B, m, n).

        One batched product with the cells, then the cells put in place: mixture j is
        (tap, output block, input block) in row-major order, as in the authors' code.
        """
        cells = self.cells
        _, cell_out, cell_in = cells.shape[:3]
        mixed = torch.matmul(alpha, cells.reshape(cells.shape[0], -1))
        kh, kw = self.kernel_size
        out_blocks, in_blocks = self.out_channels // cell_out, self.in_channels // self.groups // cell_in
        mixed = mixed.view(-1, kh * kw, out_blocks, in_blocks, cell_out, cell_in)
        kernel = mixed.permute(0, 2, 4, 3, 5, 1)
        return kernel.reshape(-1, self.out_channels, self.in_channels // self.groups, kh, kw)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (B, C_in, H, W) or (C_in, H, W)."""
        x, unbatched = self._batched(x)
        if x.shape[0] == 0:  # an empty batch gives an empty output, as nn.Conv2d does
            return x.new_empty(0, self.out_channels, *self._geometry.output_size(*x.shape[-2:]))
        kernel = self.per_sample_kernel(self._cell_attention(x))
        formulation = self.formulation
        if formulation == "auto":
            formulation = per_sample_formulation(self._geometry, x.shape, self.out_channels)
        y = convolve_each_sample(x, kernel, self._geometry, formulation)
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"mixtures={self.mixtures}, cells={self.start_cell}..{self.end_cell - 1}"
        )
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is not None:
            text += ", bias=True"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return text


class KWLinear(nn.Module):
    """A KernelWarehouse fully connected layer: a 1x1 :class:`KWConv2d` over the features.

    As the authors' ``KWLinear`` (their MobileNetV2 1/2x classifier): an input (B, ..., in_features)
    is read as B samples of ``in_features`` channels over the positions ``...`` (pooled by the
    attention), and the layer is the 1x1 convolution ``conv`` (the authors' name, so their keys
    load unchanged). Takes :class:`KWConv2d`'s options; the bias is on by default, as theirs.

    Examples:
        >>> import torch
        >>> from fmdconv.layers.kernelwarehouse import KWLinear
        >>> KWLinear(64, 10, cell_num_ratio=0.5, cell_in_ratio=0.25)(torch.randn(2, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **options: object,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.conv = KWConv2d(in_features, out_features, 1, bias=bias, device=device, dtype=dtype, **options)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, ..., in_features) to (B, ..., out_features)."""
        if x.dim() < 2 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__}: expected an input (B, ..., {self.in_features}), got shape "
                f"{tuple(x.shape)}"
            )
        positions = x.reshape(x.shape[0], -1, self.in_features).transpose(1, 2)[..., None]
        y = self.conv(positions)[..., 0].transpose(1, 2)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def kw_layers(model: nn.Module) -> list[KWConv2d]:
    """The KernelWarehouse convolutions of ``model``."""
    return [m for m in model.modules() if isinstance(m, KWConv2d)]


def kw_macs(layer: KWConv2d, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs per image (the ``fmdconv.profiling`` convention): ``conv`` the static count;
    ``attention`` the pooling plus FC1 and FC2 and, with the nonlocal basis, FC3 once per mixture;
    ``aggregation`` building the kernel from the warehouse, ``n * K``. The warehouse's parameters
    are the model's (``model.warehouses``), counted in no layer."""
    attention = layer.attention
    fcs = attention.fc1.weight.numel() + attention.fc2.weight.numel()
    if attention.num_basis is not None:
        fcs += layer.mixtures * attention.fc3.weight.numel()
    kernel = kernel_elements(layer)
    return {
        "conv": math.prod(output_shape[-2:]) * kernel,
        "attention": math.prod(input_shape) + fcs,
        "aggregation": layer.cells.shape[0] * kernel,
    }
