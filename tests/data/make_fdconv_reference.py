"""Write ``fdconv_reference.pt``: the FDConv authors' layer and ResNet run on fixed inputs.

Run from the repository root with a checkout (or ``git archive`` export) of Linwei-Chen/FDConv::

    python tests/data/make_fdconv_reference.py /path/to/FDConv

Builds, with the authors' ``FDConv`` (their detection configuration: FBM on 3x3 kernels, KSM global
and local, sigmoid attentions, temperature 1), (1) one 3x3 layer and (2) a width-0.25 CIFAR-stem
ResNet-18 whose block convolutions are their layer (their stage-1 convolutions, 16 channels, stay
static by their rule; the downsample convolutions are static as in their ResNet), with every
parameter and BatchNorm statistic randomised, and stores their state dicts, inputs and eval-mode
outputs. ``tests/test_fdconv.py`` loads them through ``fmdconv.compat`` without the authors' code.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from authors_fdconv import authors_layer, authors_model, load_authors_fdconv

OUT = Path(__file__).with_name("fdconv_reference.pt")


def randomise(module: nn.Module) -> None:
    """Every parameter and BatchNorm statistic random, at scales where every part matters."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.copy_(torch.randn_like(parameter) * (0.05 if name.endswith("dft_weight") else 0.3))
        for child in module.modules():
            if isinstance(child, nn.BatchNorm2d):
                child.running_mean.normal_()
                child.running_var.uniform_(0.5, 2.0)


def main(repository: str) -> None:
    warnings.simplefilter("ignore")
    authors = load_authors_fdconv(repository)
    torch.manual_seed(0)
    layer = authors_layer(authors, 32, 24, 3, stride=1, padding=1, kernel_num=8, bias=True)
    randomise(layer)
    layer.eval()
    layer_input = torch.randn(3, 32, 12, 12)
    model = authors_model(authors, "resnet18", 4, width=0.25, stem="cifar", num_classes=10)
    randomise(model)
    model.eval()
    model_input = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        reference = {
            "layer": {"state": layer.state_dict(), "input": layer_input, "output": layer(layer_input)},
            "resnet18": {"state": model.state_dict(), "input": model_input, "output": model(model_input)},
        }
    torch.save(reference, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
