"""A per-sample loop reference of the dynamic convolution formula, for tests.

y_b = output_b * ( conv(input_b * x_b, sum_i kernel_b,i * (spatial_b * W_i)) + sum_i kernel_b,i * bias_i ),
with a missing attention counting as 1; padding and padding modes come from nn.Conv2d itself.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fmdconv.layers import DynamicConv2d


def reference_forward(layer: DynamicConv2d, x: Tensor, kernel_attention: Tensor | None = None) -> Tensor:
    attentions = layer.attentions(x, kernel_attention)
    static = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
        bias=False,
        padding_mode=layer.padding_mode,
        dtype=x.dtype,
    )
    n = layer.kernel_num
    outputs = []
    for b in range(x.shape[0]):
        kernel = attentions["kernel"][b] if "kernel" in attentions else torch.ones(n, dtype=x.dtype)
        spatial = attentions["spatial"][b] if "spatial" in attentions else 1.0
        weight = sum(kernel[i] * (spatial * layer.weight[i]) for i in range(n))
        x_b = x[b : b + 1]
        if "input" in attentions:
            x_b = x_b * attentions["input"][b][None, :, None, None]
        y_b = static._conv_forward(x_b, weight, None)
        if layer.bias is not None:
            y_b = y_b + sum(kernel[i] * layer.bias[i] for i in range(n))[None, :, None, None]
        if "output" in attentions:
            y_b = y_b * attentions["output"][b][None, :, None, None]
        outputs.append(y_b)
    return torch.cat(outputs)
