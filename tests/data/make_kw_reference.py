"""Record the KernelWarehouse authors' outputs for tests/test_kernelwarehouse.py (kw_reference.pt).

Run from the repository root with a checkout of OSVAI/KernelWarehouse (their code is not needed by
the tests themselves):

    PYTHONPATH=src:benchmarks:tests python tests/data/make_kw_reference.py /tmp/authors/kw

Single layers: the authors' ``Warehouse_Manager`` with one ``KWConv2d``, its state dict (the layer's
keys plus ``warehouse_manager.weights.0``), an input and the output. Whole models: the authors'
``kw_resnet18`` (1/4x), ``kw_resnet50`` (1/2x, with the nonlocal basis), ``kw_mobilenetv2_050``
(4x) and ``kw1d2x_mobilenetv2_050`` (their separate 1/2x network), filled with
:func:`kw_reference.seeded_state` (so only their keys, an input and the output are stored), in eval
mode at tau = 0.3, with their parameter counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import kw_authors
from kw_reference import LAYER_CASES, MODEL_CASES, SEED, TAU, seeded_state


def layer_case(code, case: tuple) -> dict:
    c_in, c_out, k, stride, groups, cells, planes = case
    manager = code.kernel_warehouse.Warehouse_Manager(
        cell_num_ratio=cells, cell_inplane_ratio=planes, cell_outplane_ratio=planes, sharing_range=()
    )
    net = nn.Sequential(
        manager.reserve(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False, warehouse_name="w")
    )
    manager.store()
    manager.allocate(net)
    layer = net[0]
    state = {**layer.state_dict(), "warehouse_manager.weights.0": manager.weights[0].data}
    state = seeded_state(state)
    layer.load_state_dict({k: v for k, v in state.items() if not k.startswith("warehouse_manager.")})
    manager.weights[0].data.copy_(state["warehouse_manager.weights.0"])
    layer.eval()
    kw_authors.set_temperature(layer, TAU)
    x = torch.randn(3, c_in, 9, 9, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        y = layer(x)
    return {"case": case, "state": state, "input": x, "output": y}


def model_case(code, case: tuple) -> dict:
    name, ratio, width = case
    model = kw_authors.authors_model(code, name, ratio, width)
    state = seeded_state(model.state_dict())
    model.load_state_dict(state)
    model.eval()
    kw_authors.set_temperature(model, TAU)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        y = model(x)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    params = sum(p.numel() for p in model.parameters())
    return {"case": case, "shapes": shapes, "params": params, "input": x, "output": y}


def main(authors: str) -> None:
    code = kw_authors.load(authors)
    torch.manual_seed(SEED)
    reference = {
        "layers": [layer_case(code, case) for case in LAYER_CASES],
        "models": [model_case(code, case) for case in MODEL_CASES],
    }
    path = Path(__file__).with_name("kw_reference.pt")
    torch.save(reference, path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/authors/kw")
