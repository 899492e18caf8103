"""FDConv: frequency dynamic convolution, a kernel mixture over disjoint frequency bands of one weight.

Chen, Huang, Xu, Cheng, Yang, Wang, Xu. "Frequency Dynamic Convolution for Dense Image Prediction",
CVPR 2025 (code: ``Linwei-Chen/FDConv``). Three parts, each switchable here for ablations:

Fourier Disjoint Weight (FDW, ``fourier_weight``)
    The kernel, seen as a (C_out·kh) x (C_in·kw) matrix (rows: output channel, kernel row; columns:
    input channel, kernel column), is stored as its ``rfft2`` spectrum S (``dft_weight``, real and
    imaginary parts, divided by ``min(C_in, C_out) // 2`` as the authors store it). Its frequency
    bins, sorted by their distance from the origin, are cut into ``kernel_num`` = K disjoint groups
    of equal size; group g's bins are scaled by the sample's kernel attention a_g and the spectrum is
    transformed back: ``W = irfft2(alpha · Σ_g a_g M_g ⊙ S)``, alpha = ``min(C_in, C_out) // 2 · K``.
    Linear in a, so ``W = Σ_g a_g W_g`` with ``W_g = irfft2(alpha · M_g ⊙ S)``: K kernels at the
    parameter budget of one. Off: the kernel attention is dropped and ``W`` is the static weight
    ``irfft2(alpha · S) / K``.
Kernel Spatial Modulation (KSM), global (``global_modulation``) and local (``local_modulation``)
    Global: GAP -> 1x1 FC -> BN -> StarReLU (``s · relu(v)² + b``) -> four heads, input-channel
    (C_in), filter (C_out) and spatial (kh·kw) attentions ``2·sigmoid(z / T)`` and the kernel
    attention ``2·sigmoid(z / T_k) / K``. Local: an ECA-like 1-D convolution over the LayerNorm'd
    pooled channels giving a dense per-element gate ``2·sigmoid`` of shape (C_out, C_in, kh, kw).
    The per-sample kernel is ``W ⊙ local ⊙ spatial ⊙ input ⊙ filter``. With the global part off
    (the kernel attention is then uniform, 1/K) only the local gate acts, and the other way round.
Frequency Band Modulation (FBM, ``band_modulation``; 3x3 kernels, as the authors)
    The input is split by low-pass masks (``rfft2``, cut-offs 1/4, 1/8, 1/16 of the sampling rate
    for ``k_list`` 2, 4, 8) into bands; each band but the lowest is scaled by ``2·sigmoid`` of its
    own 3x3 convolution (C_in -> 1) of the input, and the bands are summed. The masks are computed on
    a 64x64 grid and resized to each map with nearest neighbours, exactly as the authors do.

With the heads zero-initialised (``attention_init="zero"``, the default) every gate is 1, the kernel
attention is 1/K and every band scale 1, so the layer is exactly the static convolution of its
weight: :func:`fmdconv.convert` starts from the static outputs this way. ``"authors"`` keeps the
authors' initialisation (N(0, 1e-6) heads, a Kaiming filter head, 1e-6 local weights), which is only
close to static. FDConv does not fit :class:`~fmdconv.layers.DynamicConv2d`'s kernel-mixture core: its
K kernels are not parameters but frequency bands of one spectrum, and its dense local gate varies
every element of the per-sample kernel (docs/models.md). The spectrum, its band split, the
modulations and the layer are one algorithm that shares the frequency layout, so one module.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmdconv.layers.attention import check_attention_init
from fmdconv.layers.formulations import convolve_each_sample, is_exporting
from fmdconv.layers.helpers import (
    IntPair,
    PaddingArg,
    batch_norm,
    check_int,
    set_conv_arguments,
)

FD_FORMULATIONS: tuple[str, ...] = ("auto", "direct", "mixture", "dft")
FD_PARTS: tuple[str, ...] = ("fourier_weight", "global_modulation", "local_modulation", "band_modulation")
FBM_GRID = 64  # the authors compute the band masks on a 64x64 grid and resize them to each map


def frequency_order(rows: int, columns: int) -> Tensor:
    """The bins of an ``rfft2`` spectrum of a ``rows x columns`` matrix, nearest the origin first.

    Returns flat indices into the (rows, columns // 2 + 1) spectrum, ordered by the Euclidean norm of
    the bin's frequency (``fftfreq`` rows, ``rfftfreq`` columns), ties as ``torch.sort`` orders them
    (as the authors' grouping does).
    """
    grid = torch.stack(
        torch.meshgrid(torch.fft.fftfreq(rows), torch.fft.rfftfreq(columns), indexing="ij"), dim=-1
    )
    return torch.sort(grid.norm(dim=-1).flatten()).indices


def band_masks(k_list: tuple[int, ...], height: int, width: int) -> Tensor:
    """FBM's low-pass masks for an (height, width) map: (len(k_list), height, width // 2 + 1), 0/1.

    Mask k keeps the bins whose largest absolute frequency is below ``0.5 / k``, on a 64x64 grid
    resized with nearest neighbours (so the masks are separable: a row mask times a column mask).
    """
    grid = torch.stack(
        torch.meshgrid(torch.fft.fftfreq(FBM_GRID), torch.fft.rfftfreq(FBM_GRID), indexing="ij"), dim=-1
    )
    chebyshev = grid.abs().amax(dim=-1)
    masks = torch.stack([chebyshev < 0.5 / k + 1e-8 for k in k_list]).float()
    return F.interpolate(masks[:, None], size=(height, width // 2 + 1), mode="nearest")[:, 0]


def _angles(products: Tensor, size: int) -> Tensor:
    """``2 pi p / size`` for integer products ``p``, reduced modulo ``size`` first (exact in float32)."""
    return (2 * math.pi / size) * torch.remainder(products, size).to(torch.float64)


def _conjugate_multiplicity(bins: int, size: int) -> Tensor:
    """How many bins of the full spectrum each of an ``rfft``'s ``bins`` stands for: 1 for the DC
    bin (and the Nyquist bin of an even ``size``), 2 for the others."""
    twice = torch.full((bins,), 2.0, dtype=torch.float64)
    twice[0] = 1.0
    if size % 2 == 0:
        twice[-1] = 1.0
    return twice


def _circulant(mask: Tensor, size: int, half: bool) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of the (size x size) matrix ``ifft(diag(mask) fft(.))`` along one axis.

    ``half``: the axis of an ``rfft``/``irfft`` pair (``mask`` has size // 2 + 1 bins; the bins that
    stand for two conjugate ones count twice); the second matrix is then that of ``irfft(i · mask ·
    rfft(.))``. Real arithmetic only (cos/sin), so it exports to ONNX.
    """
    index = torch.arange(size, device=mask.device)
    bins = torch.arange(mask.shape[0], device=mask.device)
    weight = mask / size
    if half:
        weight = weight * _conjugate_multiplicity(mask.shape[0], size).to(mask)
    angle = _angles((index[:, None, None] - index[None, :, None]) * bins, size).to(mask)
    real = (torch.cos(angle) * weight).sum(-1)
    imaginary = (torch.sin(angle) * weight).sum(-1)
    return real, (-imaginary if half else imaginary)


def low_pass(x: Tensor, mask: Tensor, real_arithmetic: bool) -> Tensor:
    """``irfft2(rfft2(x) · mask)`` over the last two dims of ``x``, for a separable 0/1 ``mask``.

    ``real_arithmetic``: as two products with real (H x H) and (W x W) matrices (no complex
    numbers, exportable) instead of the FFTs; the same linear map.
    """
    height, width = x.shape[-2:]
    if not real_arithmetic:
        spectrum = torch.fft.rfft2(x, norm="ortho")
        return torch.fft.irfft2(spectrum * mask, s=(height, width), norm="ortho")
    rows_real, rows_imaginary = _circulant(mask[:, 0], height, half=False)
    cols_real, cols_imaginary = _circulant(mask[0], width, half=True)
    return rows_real @ x @ cols_real.T + rows_imaginary @ x @ cols_imaginary.T


class StarReLU(nn.Module):
    """``scale · relu(x)² + bias`` with a learnable scalar scale (1) and bias (0) (Yu et al., 2024)."""

    def __init__(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(1, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.scale)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.relu(x) ** 2 + self.bias


class FDGlobalModulation(nn.Module):
    """KSM's global path: pooled (B, C_in) -> FC -> BN -> StarReLU -> linear heads (logits).

    ``heads`` maps ``input``/``output``/``spatial``/``kernel`` to its size. At batch 1 in training
    mode the BatchNorm normalises with its running statistics (a single pooled vector has no batch
    statistics; the authors' code fails there), leaving them unchanged for that step.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        heads: dict[str, int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.fc = nn.Linear(in_channels, hidden, bias=False, **factory)
        self.bn = nn.BatchNorm1d(hidden, **factory)
        self.act = StarReLU(**factory)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, size, **factory) for name, size in heads.items()})

    def forward(self, pooled: Tensor) -> dict[str, Tensor]:
        hidden = self.fc(pooled)
        hidden = batch_norm(self.bn, hidden)
        hidden = self.act(hidden)
        return {name: head(hidden) for name, head in self.heads.items()}


def local_kernel_size(channels: int) -> int:
    """The ECA-style width of KSM's local 1-D convolution: ``round(log2(C) / 2 + 0.5) // 2 * 2 + 1``."""
    return round(math.log2(channels) / 2 + 0.5) // 2 * 2 + 1


class FDLocalModulation(nn.Module):
    """KSM's local path: LayerNorm over the pooled channels, then a 1-D convolution along them with
    ``C_out·kh·kw`` output channels: logits (B, C_out, C_in, kh, kw), one per kernel element."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        width = local_kernel_size(in_channels)
        self.kernel_size = kernel_size
        self.norm = nn.LayerNorm(in_channels, **factory)
        self.conv = nn.Conv1d(
            1,
            out_channels * kernel_size[0] * kernel_size[1],
            width,
            padding=width // 2,
            bias=False,
            **factory,
        )

    def forward(self, pooled: Tensor) -> Tensor:
        logits = self.conv(self.norm(pooled)[:, None])  # (B, C_out·kh·kw, C_in)
        batch, _, in_channels = logits.shape
        return logits.view(batch, -1, *self.kernel_size, in_channels).permute(0, 1, 4, 2, 3)


class FDBandModulation(nn.Module):
    """FBM: the input split into frequency bands, each but the lowest scaled by a spatial gate.

    ``x = Σ_i 2·sigmoid(conv_i(x)) ⊙ (L_{i-1} x - L_i x) + L_last x`` with ``L_0 x = x`` and
    ``L_i`` the low-pass of :func:`band_masks` ``k_list[i]`` (cut-off ``0.5 / k``), ``conv_i`` a 3x3
    convolution C_in -> 1 with a bias.
    """

    def __init__(
        self,
        in_channels: int,
        k_list: tuple[int, ...] = (2, 4, 8),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.k_list = tuple(k_list)
        self.gates = nn.ModuleList(
            nn.Conv2d(in_channels, 1, 3, padding=1, device=device, dtype=dtype) for _ in self.k_list
        )

    def forward(self, x: Tensor, real_arithmetic: bool = False) -> Tensor:
        masks = band_masks(self.k_list, *x.shape[-2:]).to(x)
        previous, out = x, None
        for mask, gate in zip(masks, self.gates, strict=True):
            low = low_pass(x, mask, real_arithmetic)
            band = 2 * torch.sigmoid(gate(x)) * (previous - low)
            out = band if out is None else out + band
            previous = low
        return previous if out is None else out + previous


class FDConv2d(nn.Module):
    """FDConv, frequency dynamic convolution (Chen et al., CVPR 2025); a drop-in for nn.Conv2d.

    The module docstring gives the three parts and their formulas. The constructor takes
    nn.Conv2d's arguments (``groups`` must be 1: the weight is transformed as one matrix), then:

    Args:
        kernel_num: K, the disjoint frequency groups (must divide the spectrum's
            ``C_out·kh · (C_in·kw // 2 + 1)`` bins; the authors' detection models use 64).
        reduction: the global path's width is ``max(int(C_in · reduction), min_channels)``.
        min_channels: see ``reduction`` (16).
        gate_temperature: T of the channel, filter and spatial attentions (1, as the authors).
        kernel_temperature: T_k of the kernel attention (1).
        fourier_weight, global_modulation, local_modulation: switch FDW and the two KSM paths.
        band_modulation: FBM on the input (default: on for 3x3 kernels, as the authors).
        k_list: FBM's band cut-offs (``0.5 / k``).
        attention_init: ``"zero"`` (the layer starts as the static convolution of its weight) or
            ``"authors"`` (see the module docstring).
        formulation: how the per-sample kernel is made; all exact. ``"direct"``: per sample, the
            spectrum scaled by the group attentions and one ``irfft2`` (the authors' way);
            ``"mixture"``: the K group kernels W_g (one ``irfft2`` each) mixed per sample like the
            other kernel mixtures; ``"dft"``: the ``irfft2`` (and FBM's transforms) as products with
            real DFT matrices, the export path (ONNX has no complex numbers); ``"auto"``: ``dft``
            while exporting, ``mixture`` when there are fewer groups than samples, else ``direct``.
            Then one convolution per sample (:func:`~fmdconv.layers.formulations.convolve_each_sample`).

    Shape:
        Input (B, C_in, H, W) or (C_in, H, W); output (B, C_out, H', W') as nn.Conv2d's.

    Attributes:
        dft_weight: (C_out·kh, C_in·kw // 2 + 1, 2), the spectrum's real and imaginary parts over
            ``min(C_in, C_out) // 2`` (at least 1); ``bias`` (C_out) or None.
        global_modulation, local_modulation, band_modulation: the parts, or None where off.

    Examples:
        >>> import torch
        >>> from fmdconv.layers import FDConv2d
        >>> conv = FDConv2d(32, 32, 3, padding=1, kernel_num=4)
        >>> conv(torch.randn(2, 32, 16, 16)).shape
        torch.Size([2, 32, 16, 16])
        >>> static = torch.nn.Conv2d(32, 32, 3, padding=1, bias=False)
        >>> conv.load_static_weight(static.weight)
        >>> x = torch.randn(1, 32, 16, 16)
        >>> bool(torch.allclose(conv(x), static(x), atol=1e-5))
        True
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
        kernel_num: int = 4,
        reduction: float = 0.0625,
        min_channels: int = 16,
        gate_temperature: float = 1.0,
        kernel_temperature: float = 1.0,
        fourier_weight: bool = True,
        global_modulation: bool = True,
        local_modulation: bool = True,
        band_modulation: bool | None = None,
        k_list: tuple[int, ...] = (2, 4, 8),
        attention_init: str = "zero",
        formulation: str = "auto",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_int(name, "in_channels", in_channels)
        check_int(name, "out_channels", out_channels)
        check_int(name, "kernel_num", kernel_num)
        check_int(name, "min_channels", min_channels)
        if groups != 1:
            raise ValueError(
                f"{name}: groups must be 1 (the weight is transformed as one matrix), got {groups!r}"
            )
        for option, value in (("reduction", reduction), ("gate_temperature", gate_temperature)):
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: {option} must be a positive number, got {value!r}")
        if not isinstance(kernel_temperature, int | float) or kernel_temperature <= 0:
            raise ValueError(
                f"{name}: kernel_temperature must be a positive number, got {kernel_temperature!r}"
            )
        if not k_list or not all(isinstance(k, int) and k >= 1 for k in k_list):
            raise ValueError(f"{name}: k_list must be a non-empty sequence of ints >= 1, got {k_list!r}")
        self.attention_init = check_attention_init(attention_init, name)
        self.in_channels = in_channels
        self.out_channels = out_channels
        _, self._geometry = set_conv_arguments(
            self, kernel_size, stride, padding, dilation, groups, padding_mode
        )

        kh, kw = self.kernel_size
        rows, columns = out_channels * kh, in_channels * kw
        bins = rows * (columns // 2 + 1)
        if bins % kernel_num:
            raise ValueError(
                f"{name}: kernel_num must divide the {bins} frequency bins of the "
                f"({rows} x {columns}) weight matrix, got {kernel_num!r}"
            )
        self.kernel_num = kernel_num
        self.spectrum_scale = max(1, min(in_channels, out_channels) // 2)
        self.gate_temperature = float(gate_temperature)
        self.kernel_temperature = float(kernel_temperature)
        self.fourier_weight = bool(fourier_weight)
        self.formulation = formulation
        with torch.device("cpu"):  # real values, also while building on the meta device
            groups_of_bins = torch.empty(bins, dtype=torch.long)
            groups_of_bins[frequency_order(rows, columns)] = torch.arange(bins) // (bins // kernel_num)
        groups_of_bins = groups_of_bins.view(rows, columns // 2 + 1).to(device)
        self.register_buffer("frequency_group", groups_of_bins, persistent=False)

        factory = {"device": device, "dtype": dtype}
        self.dft_weight = nn.Parameter(torch.empty(rows, columns // 2 + 1, 2, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        heads = {"input": in_channels, "output": out_channels}
        if kh * kw > 1:
            heads["spatial"] = kh * kw
        if kernel_num > 1 and self.fourier_weight:
            heads["kernel"] = kernel_num
        hidden = max(int(in_channels * reduction), min_channels)
        self.global_modulation = (
            FDGlobalModulation(in_channels, hidden, heads, **factory) if global_modulation else None
        )
        self.local_modulation = (
            FDLocalModulation(in_channels, out_channels, self.kernel_size, **factory)
            if local_modulation
            else None
        )
        if band_modulation is None:
            band_modulation = self.kernel_size == (3, 3)
        self.band_modulation = FDBandModulation(in_channels, k_list, **factory) if band_modulation else None
        self.reset_parameters()

    @property
    def formulation(self) -> str:
        """One of :data:`FD_FORMULATIONS`; checked on assignment."""
        return self._formulation

    @formulation.setter
    def formulation(self, value: str) -> None:
        if value not in FD_FORMULATIONS:
            raise ValueError(
                f"FDConv2d.formulation must be one of {', '.join(FD_FORMULATIONS)}; got {value!r}"
            )
        self._formulation = value

    def reset_parameters(self) -> None:
        """Kaiming-uniform weight as nn.Conv2d's (stored as its spectrum), zero bias, and the heads
        per ``attention_init``."""
        weight = torch.empty(self.out_channels, self.in_channels, *self.kernel_size)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.load_static_weight(weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        zero = self.attention_init == "zero"
        if self.global_modulation is not None:
            path = self.global_modulation
            nn.init.kaiming_normal_(path.fc.weight, mode="fan_out", nonlinearity="relu")
            path.bn.reset_running_stats()
            path.bn.reset_parameters()
            path.act.reset_parameters()
            for head_name, head in path.heads.items():
                nn.init.zeros_(head.bias)
                if zero:
                    nn.init.zeros_(head.weight)
                elif head_name == "output":  # the authors' code leaves its filter head Kaiming-normal
                    nn.init.kaiming_normal_(head.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.normal_(head.weight, std=1e-6)
        if self.local_modulation is not None:
            self.local_modulation.norm.reset_parameters()
            nn.init.constant_(self.local_modulation.conv.weight, 0.0 if zero else 1e-6)
        if self.band_modulation is not None:
            for gate in self.band_modulation.gates:
                nn.init.zeros_(gate.bias)
                if zero:
                    nn.init.zeros_(gate.weight)
                else:
                    nn.init.normal_(gate.weight, std=1e-6)

    def load_static_weight(self, weight: Tensor) -> None:
        """Set the spectrum from a static kernel (C_out, C_in, kh, kw), as the authors' conversion does.

        With neutral attentions (``attention_init="zero"``) the layer then computes that static
        convolution.
        """
        expected = (self.out_channels, self.in_channels, *self.kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(
                f"FDConv2d.load_static_weight: weight must have shape {expected}, got {tuple(weight.shape)}"
            )
        matrix = weight.detach().permute(0, 2, 1, 3).reshape(self.dft_weight.shape[0], -1)
        spectrum = torch.fft.rfft2(matrix.to(self.dft_weight.dtype))
        with torch.no_grad():
            self.dft_weight.copy_(torch.view_as_real(spectrum) / self.spectrum_scale)

    def static_weight(self) -> Tensor:
        """The kernel at neutral attentions, ``irfft2(S) · min(C_in, C_out) // 2`` (C_out, C_in, kh, kw)."""
        spectrum = torch.view_as_complex(self.dft_weight.contiguous()) * self.spectrum_scale
        return self._as_kernels(torch.fft.irfft2(spectrum, s=self._matrix_size())[None])[0]

    def _matrix_size(self) -> tuple[int, int]:
        return self.out_channels * self.kernel_size[0], self.in_channels * self.kernel_size[1]

    def _as_kernels(self, matrices: Tensor) -> Tensor:
        """(N, C_out·kh, C_in·kw) weight matrices -> (N, C_out, C_in, kh, kw) kernels."""
        kh, kw = self.kernel_size
        return matrices.view(-1, self.out_channels, kh, self.in_channels, kw).permute(0, 1, 3, 2, 4)

    def _batched(self, x: Tensor) -> tuple[Tensor, bool]:
        unbatched = x.dim() == 3
        x = x.unsqueeze(0) if unbatched else x
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"FDConv2d: expected an input (B, {self.in_channels}, H, W) or ({self.in_channels}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        return x, unbatched

    def _attentions(self, pooled: Tensor) -> dict[str, Tensor]:
        attentions: dict[str, Tensor] = {}
        if self.global_modulation is not None:
            for head_name, logits in self.global_modulation(pooled).items():
                if head_name == "kernel":
                    attentions[head_name] = (
                        2 * torch.sigmoid(logits / self.kernel_temperature) / self.kernel_num
                    )
                else:
                    attentions[head_name] = 2 * torch.sigmoid(logits / self.gate_temperature)
        if self.local_modulation is not None:
            attentions["local"] = 2 * torch.sigmoid(self.local_modulation(pooled))
        return attentions

    def attentions(self, x: Tensor) -> dict[str, Tensor]:
        """The attentions for input ``x``: ``input`` (B, C_in), ``output`` (B, C_out), ``spatial``
        (B, kh·kw), ``kernel`` (B, K) and ``local`` (B, C_out, C_in, kh, kw), those the layer has."""
        x, unbatched = self._batched(x)
        attentions = self._attentions(x.mean((2, 3)))
        return {k: v[0] for k, v in attentions.items()} if unbatched else attentions

    def _resolve_formulation(self, batch: int) -> str:
        if self.formulation != "auto":
            return self.formulation
        if is_exporting():
            return "dft"
        return "mixture" if self.kernel_num < batch else "direct"

    def _group_scales(self, kernel: Tensor | None, batch: int) -> Tensor:
        """Per-sample scale of every spectrum bin, alpha · a_g(bin): (B, rows, columns // 2 + 1)."""
        alpha = self.spectrum_scale * self.kernel_num
        if kernel is None:  # FDW off, or one group: every group at 1/K
            return self.dft_weight.new_full((1, *self.frequency_group.shape), alpha / self.kernel_num)
        return kernel[:, self.frequency_group] * alpha

    def fourier_kernels(self, kernel: Tensor | None, formulation: str) -> Tensor:
        """The FDW kernels ``irfft2(alpha Σ_g a_g M_g ⊙ S)``: (B, C_out, C_in, kh, kw), or (1, ...) when
        ``kernel`` (the kernel attention, (B, K)) is None."""
        size = self._matrix_size()
        if formulation == "mixture" and kernel is not None:
            one_hot = (
                self.frequency_group == torch.arange(self.kernel_num, device=kernel.device)[:, None, None]
            )
            spectra = self.dft_weight * (one_hot * (self.spectrum_scale * self.kernel_num))[..., None]
            groups = torch.fft.irfft2(torch.view_as_complex(spectra), s=size)  # (K, rows, columns)
            return self._as_kernels((kernel @ groups.flatten(1)).view(-1, *size))
        scales = self._group_scales(kernel, 1 if kernel is None else kernel.shape[0])
        if formulation == "dft":
            real, imaginary = self.dft_weight[..., 0] * scales, self.dft_weight[..., 1] * scales
            rows_cos, rows_sin = self._inverse_dft_rows(size[0])
            cols_cos, cols_sin = self._inverse_dft_columns(size[1])
            real_rows = rows_cos @ real - rows_sin @ imaginary
            imaginary_rows = rows_sin @ real + rows_cos @ imaginary
            return self._as_kernels(real_rows @ cols_cos - imaginary_rows @ cols_sin)
        spectra = torch.view_as_complex((self.dft_weight * scales[..., None]).contiguous())
        return self._as_kernels(torch.fft.irfft2(spectra, s=size))

    def _inverse_dft_rows(self, size: int) -> tuple[Tensor, Tensor]:
        """cos and sin parts of the inverse DFT (size x size), 1/size included."""
        index = torch.arange(size, device=self.dft_weight.device)
        angle = _angles(index[:, None] * index[None, :], size)
        return (torch.cos(angle) / size).to(self.dft_weight), (torch.sin(angle) / size).to(self.dft_weight)

    def _inverse_dft_columns(self, size: int) -> tuple[Tensor, Tensor]:
        """cos and sin parts (size // 2 + 1, size) of the half-spectrum inverse (``irfft``)."""
        device = self.dft_weight.device
        bins, index = torch.arange(size // 2 + 1, device=device), torch.arange(size, device=device)
        angle = _angles(bins[:, None] * index[None, :], size)
        weight = (_conjugate_multiplicity(size // 2 + 1, size).to(device) / size)[:, None]
        return (torch.cos(angle) * weight).to(self.dft_weight), (torch.sin(angle) * weight).to(
            self.dft_weight
        )

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (B, C_in, H, W) or (C_in, H, W)."""
        x, unbatched = self._batched(x)
        batch = x.shape[0]
        if batch == 0:
            return x.new_empty(0, self.out_channels, *self._geometry.output_size(x.shape[-2], x.shape[-1]))
        formulation = self._resolve_formulation(batch)
        attentions = self._attentions(x.mean((2, 3)))
        kernel = self.fourier_kernels(attentions.get("kernel"), formulation)
        if "local" in attentions:
            kernel = kernel * attentions["local"]
        if "spatial" in attentions:
            kernel = kernel * attentions["spatial"].view(batch, 1, 1, *self.kernel_size)
        if "input" in attentions:
            kernel = kernel * attentions["input"][:, None, :, None, None]
        if "output" in attentions:
            kernel = kernel * attentions["output"][:, :, None, None, None]
        if self.band_modulation is not None:
            x = self.band_modulation(x, real_arithmetic=formulation == "dft")
        how: Literal["grouped", "matmul"] = "matmul" if formulation == "dft" else "grouped"
        # One kernel for the whole batch (nothing varies per sample) is a plain convolution.
        y = convolve_each_sample(x, kernel[0] if kernel.shape[0] == 1 else kernel, self._geometry, how)
        if self.bias is not None:
            y = y + self.bias[:, None, None]
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
        if self.bias is not None:
            text += ", bias=True"
        off = [part for part in FD_PARTS if getattr(self, part) in (None, False)]
        if off:
            text += f", off={off}"
        return text
