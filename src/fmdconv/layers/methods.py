"""The four dynamic convolutions as presets of :class:`~fmdconv.layers.dynamic_conv.DynamicConv2d`."""

from __future__ import annotations

from fmdconv.layers.dynamic_conv import DynamicConv2d, DynamicConvSpec


class CondConv2d(DynamicConv2d):
    """CondConv: conditionally parameterised convolution.

    Yang, Bender, Le, Ngiam. "CondConv: Conditionally Parameterized Convolutions for Efficient
    Inference", NeurIPS 2019. Routing weights r = sigmoid(FC(GAP(x))), one per expert, not normalised;
    kernel sum_i r_i W_i. No temperature. Bias on by default, as nn.Conv2d.
    """

    spec = DynamicConvSpec(gates=(), kernel_source="routing", kernel_activation="sigmoid")


class DyConv2d(DynamicConv2d):
    """DyConv: dynamic convolution, attention over convolution kernels.

    Chen, Dai, Liu, Chen, Yuan, Liu. "Dynamic Convolution: Attention over Convolution Kernels",
    CVPR 2020. pi = softmax(FC(ReLU(FC(GAP(x)))) / tau); kernel sum_i pi_i W_i, bias sum_i pi_i b_i.
    tau anneals 30 -> 1 over the first 10 epochs.
    """

    spec = DynamicConvSpec(gates=(), kernel_source="mlp", kernel_temperature=30.0)


class ODConv2d(DynamicConv2d):
    """ODConv: omni-dimensional dynamic convolution.

    Li, Zhou, Yao. "Omni-Dimensional Dynamic Convolution", ICLR 2022. One trunk FC -> BN -> ReLU with
    four heads: input-channel, output-channel (filter) and spatial sigmoid attentions, and a kernel
    softmax, all divided by one temperature T (30 -> 1). No bias by default.
    """

    spec = DynamicConvSpec(
        gates=("input", "output", "spatial"),
        kernel_source="trunk",
        bias=False,
        gate_temperature=30.0,
        kernel_temperature=30.0,
    )


class FMDConv2d(DynamicConv2d):
    """FMDConv: fast multi-attention dynamic convolution.

    Zhang, Wan, Duan, Tong, Deng, Long. "FMDConv: Fast Multi-Attention Dynamic Convolution via
    Speed-Accuracy Trade-off", Knowledge-Based Systems 317, 2025 (arXiv 2503.17530). ODConv's trunk
    with only input and output attentions (gate temperature T_s, 30 -> 1), plus a separate DyConv-style
    kernel path with a high, "temperature-degraded" softmax temperature tau (34 -> 1; the authors'
    release keeps it at 34). No spatial attention, so the kernel is a plain mix of the n kernels and the
    fast ``mixed`` formulation applies. Per-kernel bias on by default.
    """

    spec = DynamicConvSpec(
        gates=("input", "output"), kernel_source="mlp", gate_temperature=30.0, kernel_temperature=34.0
    )
