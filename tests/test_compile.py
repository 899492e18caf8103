"""Compiled training (recipe ``compile``, ``fmdconv train --compile``): one graph per training step,
checkpoints with the module's own names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fmdconv.models import METHODS, create_model, method_options
from fmdconv.train import compilation, load_trained_model, train
from fmdconv.train.checkpoint import load_checkpoint
from test_train import TINY

# A training step's forward at the smallest size (its backward is compiled from the same graph).
FAST = ("static", "fmd")


def tiny_model(method: str) -> torch.nn.Module:
    return create_model(
        "resnet18", num_classes=10, stem="cifar", width=0.0625, **method_options(method)
    ).train()


def assert_one_graph(method: str) -> None:
    model = tiny_model(method)
    x, labels = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])

    def step_forward(images: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(images), labels)

    explanation = torch._dynamo.explain(step_forward)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("method", FAST)
def test_a_training_step_compiles_as_one_graph(method):
    assert_one_graph(method)


@pytest.mark.slow  # a few seconds of tracing each; static and fmd run above in the default selection
@pytest.mark.parametrize("method", [m for m in METHODS if m not in FAST])
def test_every_method_trains_as_one_graph(method):
    assert_one_graph(method)


def test_compiled_training_steps_and_checkpoints_without_prefixes(tmp_path: Path, monkeypatch):
    graphs: list[torch.fx.GraphModule] = []

    def counting(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        graphs.append(graph)
        return graph.forward

    monkeypatch.setattr(compilation, "BACKEND", counting)
    # 12 steps per epoch: 10 logged (eager, the attention probe's hooks), 2 through the compiled model.
    recipe = TINY.replace(conv="fmd", batch_size=4, subset=48, epochs=1, compile=True, precise_bn_images=0)
    result = train(recipe, tmp_path, progress=False, tensorboard=False)
    assert len(graphs) == 1 and result.history[0]["train_loss"] > 0
    state = load_checkpoint(tmp_path / "last.pt")["model"]
    assert not any("_orig_mod" in key for key in state)
    model, loaded, _ = load_trained_model(tmp_path / "last.pt")
    assert loaded.compile and not isinstance(model, torch._dynamo.eval_frame.OptimizedModule)


def test_compile_is_a_recipe_flag_of_train_and_compare():
    from fmdconv.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--compile"]).compile is True
    assert parser.parse_args(["compare", "--compile"]).compile is True
    assert TINY.compile is False
