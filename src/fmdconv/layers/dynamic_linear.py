"""A dynamic fully connected layer: a 1x1 dynamic convolution on the (B, C, 1, 1) view of its input."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fmdconv.layers.dcd import check_input_dtype
from fmdconv.layers.factory import create_conv2d
from fmdconv.layers.helpers import is_int_at_least, renamed_keyword
from fmdconv.layers.registry import conv_info, conv_names, method_info


class DynamicLinear(nn.Module):
    """A :class:`torch.nn.Linear` with n weight matrices mixed per sample, for (B, in) or (in,) inputs.

    CondConv (Yang et al., NeurIPS 2019) makes MobileNetV2's classifier dynamic this way. The layer
    is one 1x1 dynamic convolution of kind ``conv`` (``cond``, ``dy``, ``od``, ``fmd``), so it shares
    the attentions, temperatures and formulations of the convolutions; its parameters live in
    ``conv``. With ``conv="dcd"`` it is a 1x1 :class:`~fmdconv.layers.DCDConv2d`: DCD's dynamic
    classifier (``DYCls`` in the DCD code) with a bias and ``latent_dim=32, squeeze_channels=32``,
    the options the backbones pass (``method_info("dcd").classifier_options``). Its latent
    projections Q and P are linear layers in the DCD code and start as its linear layers do, N(0,
    0.01) (P at zero with ``attention_init="zero"``), not as the convolutions' Kaiming normal, whose
    P alone would give logits of standard deviation ~4 at the start (the record's
    ``classifier_init``).

    Args:
        in_features, out_features, bias, device, dtype: as nn.Linear.
        conv: which dynamic method (default ``cond``); ``kind=`` is its deprecated name.
        options: the dynamic layer's keyword options (``kernel_num``, ``shared_routing``, ...).

    Inputs are (B, in_features) or (in_features,).
    """

    @renamed_keyword("kind", "conv")
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        conv: str = "cond",
        **options: Any,
    ) -> None:
        super().__init__()
        if not conv_info(conv).dynamic:
            dynamic = ", ".join(name for name in conv_names() if method_info(name).dynamic)
            raise ValueError(
                f"DynamicLinear: the conv kind must be a dynamic method ({dynamic}), got {conv!r}"
            )
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if not is_int_at_least(value, 1):
                raise ValueError(f"DynamicLinear: {arg} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.method = conv
        self.conv = create_conv2d(
            conv, in_features, out_features, 1, bias=bias, device=device, dtype=dtype, **options
        )
        self._init_classifier()

    def _init_classifier(self) -> None:
        init = method_info(self.method).classifier_init
        if init is not None:
            init(self.conv)

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
        self._init_classifier()

    def forward(self, x: Tensor, kernel_attention: Tensor | None = None) -> Tensor:
        """``x`` (B, in_features) or (in_features,); ``kernel_attention``: a shared routing, if built so."""
        if x.dim() not in (1, 2) or x.shape[-1] != self.in_features:
            raise ValueError(
                f"DynamicLinear: expected an input of shape (B, {self.in_features}) or "
                f"({self.in_features},), got {tuple(x.shape)}"
            )
        check_input_dtype("DynamicLinear", x, self.conv.weight.dtype)
        if kernel_attention is None:
            return self.conv(x[..., None, None])[..., 0, 0]
        if not method_info(self.method).takes("shared_routing"):
            raise ValueError(f"DynamicLinear: a {self.method} classifier takes no kernel_attention")
        return self.conv(x[..., None, None], kernel_attention)[..., 0, 0]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
