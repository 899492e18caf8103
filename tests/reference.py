"""A per-sample loop reference of the dynamic convolution formula, for tests.

y_b = output_b * ( conv(input_b * x_b, sum_i kernel_b,i * (spatial_b * W_i)) + sum_i kernel_b,i * bias_i ),
with a missing attention counting as 1; padding and padding modes come from nn.Conv2d itself.

The attentions are computed here too, from the layer's parameters and docs/design.md, section 1, and not taken
from ``layer.attentions()``: a gate is sigmoid(head(relu(bn(fc(mean(x))))) / T), the kernel attention
softmax(z / tau) (CondConv: sigmoid(z), no temperature), where z comes from the gate trunk (ODConv),
the kernel MLP fc2(relu(fc1(mean(x)))) (DyConv, FMDConv) or CondConv's routing fc(mean(x)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fmdconv.layers import DynamicConv2d, set_temperature


def small_net(method: type[DynamicConv2d]) -> nn.Sequential:
    """Three layers of ``method`` covering padding, stride, groups and a 1x1 kernel, then pooling."""
    return nn.Sequential(
        method(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        method(8, 8, 3, stride=2, padding=1, groups=2),
        method(8, 16, 1),
        nn.AdaptiveAvgPool2d(1),
    )


def randomise(layer: nn.Module, gate: float = 1.5, kernel: float = 0.7) -> nn.Module:
    """Non-trivial attention weights and biases and moderate temperatures in every dynamic layer of
    ``layer``, so that every attention varies across samples (an untrained layer at its initial
    temperature of about 30 has nearly constant attentions, which hide per-sample errors)."""
    layers = [m for m in layer.modules() if isinstance(m, DynamicConv2d)]
    with torch.no_grad():
        for dynamic in layers:
            for parameter in dynamic.parameters():
                if parameter.dim() <= 2 and parameter is not dynamic.weight:
                    parameter.normal_(0, 0.5)
            if dynamic.bias is not None:
                dynamic.bias.normal_()
    set_temperature(layer, gate=gate, kernel=kernel)
    return layer


def _trunk_hidden(layer: DynamicConv2d, pooled: Tensor) -> Tensor:
    """relu(bn(fc(pooled))): batch statistics in training (biased variance), running ones otherwise
    and at batch size 1 (where a single vector has no batch statistics)."""
    trunk = layer.gate
    hidden = pooled @ trunk.fc.weight.T
    bn = trunk.bn
    if layer.training and pooled.shape[0] > 1:
        mean, var = hidden.mean(0), hidden.var(0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return torch.relu((hidden - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias)


def reference_attentions(
    layer: DynamicConv2d, x: Tensor, kernel_attention: Tensor | None = None
) -> dict[str, Tensor]:
    """The attentions of ``layer`` for a batch ``x``, from the formula (see the module docstring)."""
    pooled = x.mean((2, 3))
    attentions: dict[str, Tensor] = {}
    if layer.gate is not None:
        hidden = _trunk_hidden(layer, pooled)
        for name, head in layer.gate.heads.items():
            logits = hidden @ head.weight.T + head.bias
            if name == "kernel":
                attentions[name] = torch.softmax(logits / layer.kernel_temperature, dim=1)
            else:
                attentions[name] = torch.sigmoid(logits / layer.gate_temperature)
    path = layer.kernel_path
    if kernel_attention is not None:
        attentions["kernel"] = kernel_attention
    elif path is not None and hasattr(path, "fc1"):
        logits = torch.relu(pooled @ path.fc1.weight.T) @ path.fc2.weight.T + path.fc2.bias
        attentions["kernel"] = torch.softmax(logits / layer.kernel_temperature, dim=1)
    elif path is not None:
        attentions["kernel"] = torch.sigmoid(pooled @ path.fc.weight.T + path.fc.bias)
    if "spatial" in attentions:
        attentions["spatial"] = attentions["spatial"].view(-1, *layer.kernel_size)
    return {name: a for name, a in attentions.items() if name not in layer.disabled_attentions}


def reference_forward(layer: DynamicConv2d, x: Tensor, kernel_attention: Tensor | None = None) -> Tensor:
    attentions = reference_attentions(layer, x, kernel_attention)
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
