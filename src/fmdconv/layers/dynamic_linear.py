"""A dynamic fully connected layer: a 1x1 dynamic convolution on the (B, C, 1, 1) view of its input."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fmdconv.layers.dcd import DCDConv2d, check_input_dtype
from fmdconv.layers.dynamic_conv import DynamicConv2d
from fmdconv.layers.factory import create_conv2d
from fmdconv.layers.helpers import is_int_at_least


class DynamicLinear(nn.Module):
    """A :class:`torch.nn.Linear` with n weight matrices mixed per sample, for (B, in) or (in,) inputs.

    CondConv (Yang et al., NeurIPS 2019) makes MobileNetV2's classifier dynamic this way. The layer
    is one 1x1 dynamic convolution of ``kind`` (``cond``, ``dy``, ``od``, ``fmd``), so it shares the
    attentions, temperatures and formulations of the convolutions; its parameters live in ``conv``.
    With ``kind="dcd"`` it is a 1x1 :class:`~fmdconv.layers.DCDConv2d`: DCD's dynamic classifier
    (``DYCls`` in the DCD code) with a bias and ``latent_dim=32, squeeze_channels=32``, the options
    the backbones pass (:data:`fmdconv.models.conv_factory.DCD_CLASSIFIER_OPTIONS`). Its latent
    projections Q and P are linear layers in the DCD code and start as its linear layers do, N(0,
    0.01) (P at zero with ``attention_init="zero"``), not as the convolutions' Kaiming normal, whose
    P alone would give logits of standard deviation ~4 at the start.

    Args:
        in_features, out_features, bias, device, dtype: as nn.Linear.
        kind: which dynamic method (default ``cond``).
        options: the dynamic layer's keyword options (``kernel_num``, ``shared_routing``, ...).

    Inputs are (B, in_features) or (in_features,).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        kind: str = "cond",
        **options: Any,
    ) -> None:
        super().__init__()
        if kind == "static":
            raise ValueError(
                "DynamicLinear: kind must be a dynamic method (cond, dy, od, fmd, dcd), got 'static'"
            )
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if not is_int_at_least(value, 1):
                raise ValueError(f"DynamicLinear: {arg} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.conv: DynamicConv2d | DCDConv2d = create_conv2d(  # type: ignore[assignment]
            kind, in_features, out_features, 1, bias=bias, device=device, dtype=dtype, **options
        )
        if isinstance(self.conv, DCDConv2d):
            self._init_dcd_projections()

    def _init_dcd_projections(self) -> None:
        conv = self.conv
        nn.init.normal_(conv.latent_in, 0.0, 0.01)
        if conv.attention_init == "authors":
            nn.init.normal_(conv.latent_out, 0.0, 0.01)

    @property
    def weight(self) -> nn.Parameter:
        """The n weight matrices as 1x1 kernels, (n, out_features, in_features, 1, 1); DCD's static
        matrix W0, (out_features, in_features, 1, 1)."""
        return self.conv.weight

    @property
    def bias(self) -> nn.Parameter | None:
        """Per-kernel biases (n, out_features), or None."""
        return self.conv.bias

    def reset_parameters(self) -> None:
        """Re-initialise the kernels and the attention paths (see :class:`DynamicConv2d`; DCD's
        projections as in the class docstring)."""
        self.conv.reset_parameters()
        if isinstance(self.conv, DCDConv2d):
            self._init_dcd_projections()

    def forward(self, x: Tensor, kernel_attention: Tensor | None = None) -> Tensor:
        """``x`` (B, in_features) or (in_features,); ``kernel_attention``: a shared routing, if built so."""
        if x.dim() not in (1, 2) or x.shape[-1] != self.in_features:
            raise ValueError(
                f"DynamicLinear: expected an input of shape (B, {self.in_features}) or "
                f"({self.in_features},), got {tuple(x.shape)}"
            )
        check_input_dtype("DynamicLinear", x, self.conv.weight.dtype)
        if isinstance(self.conv, DCDConv2d):
            if kernel_attention is not None:
                raise ValueError("DynamicLinear: a dcd classifier takes no kernel_attention")
            return self.conv(x[..., None, None])[..., 0, 0]
        return self.conv(x[..., None, None], kernel_attention)[..., 0, 0]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
