"""What a recipe builds: its model, optimizer, temperature schedules and data splits, and the model
saved in a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fmdconv.data import build_dataset, build_loader, dataset_info
from fmdconv.layers import TemperatureScheduler, conv_info, restore_disabled_attentions
from fmdconv.models import create_model
from fmdconv.train.checkpoint import load_checkpoint
from fmdconv.train.recipe import Recipe, saved_recipe
from fmdconv.train.seeding import epoch_seed
from fmdconv.utils.devices import resolve_device


def has_kernel_num(conv: str) -> bool:
    """Whether method ``conv``'s layer has a number of kernels n (the recipe's ``kernel_num``).

    The kernel mixtures and FDConv (n frequency groups) do; a static convolution, DCD and
    KernelWarehouse do not, and their recipe's ``kernel_num`` is unused.
    """
    return conv_info(conv).takes("kernel_num")


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's backbone, sized for its dataset's classes and channels."""
    info = dataset_info(recipe.dataset)
    uses_init = conv_info(recipe.conv).takes("attention_init")
    dynamic_options = {"attention_init": recipe.attention_init} if uses_init else {}
    return create_model(
        recipe.model,
        conv=recipe.conv,
        attention=recipe.attention,
        kernel_num=recipe.kernel_num,
        num_classes=info.num_classes,
        stem=recipe.stem,
        width=recipe.width,
        dropout=recipe.dropout,
        in_chans=info.in_chans,
        **dynamic_options,
    )


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD over ``model``'s parameters with the recipe's rate, momentum and weight decay."""
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )


def build_temperature_scheduler(
    model: nn.Module, recipe: Recipe, iters_per_epoch: int
) -> TemperatureScheduler:
    """The papers' temperature schedules of ``model``'s dynamic layers, with the recipe's settings."""
    return TemperatureScheduler.for_paper(
        model,
        iters_per_epoch,
        warm_epochs=recipe.temperature_warm_epochs,
        kernel_mode=recipe.kernel_temperature,
        gate_start=recipe.gate_temperature_start,
        kernel_start=recipe.kernel_temperature_start,
    )


def load_trained_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Recipe, dict[str, Any]]:
    """The model saved in checkpoint ``path`` (in eval mode, with its temperatures and any attentions
    switched off in training), its recipe and the whole checkpoint."""
    device = resolve_device(device)
    checkpoint = load_checkpoint(path, map_location=device)
    recipe = saved_recipe(checkpoint["recipe"])
    model = build_model(recipe)
    model.load_state_dict(checkpoint["model"])
    restore_disabled_attentions(model, checkpoint.get("disabled_attentions", {}))
    return model.to(device).eval(), recipe, checkpoint


def build_split(recipe: Recipe, split: str) -> Dataset[tuple[Tensor, int]]:
    """The recipe's training or test set (with ``subset`` / ``test_subset`` applied)."""
    return build_dataset(
        recipe.dataset,
        split,
        data_dir=recipe.data_dir,
        image_size=recipe.image_size,
        subset=recipe.subset if split == "train" else recipe.test_subset,
        seed=recipe.seed,
    )


def build_train_loader(
    dataset: Dataset, recipe: Recipe, batch_size: int, epoch: int, distributed: bool, device: torch.device
) -> DataLoader:
    """Epoch ``epoch``'s training batches of ``batch_size`` per process, in an order that depends
    only on the recipe's seed and ``epoch`` (:func:`~fmdconv.train.seeding.epoch_seed`)."""
    return build_loader(
        dataset,
        batch_size,
        train=True,
        num_workers=recipe.num_workers,
        distributed=distributed,
        seed=epoch_seed(recipe.seed, epoch),
        pin_memory=device.type == "cuda",
    )


def build_test_loader(
    dataset: Dataset, recipe: Recipe, distributed: bool, device: torch.device
) -> DataLoader:
    """The test batches (``eval_batch_size``, or ``batch_size``), every image once over the processes."""
    return build_loader(
        dataset,
        recipe.eval_batch_size or recipe.batch_size,
        train=False,
        num_workers=recipe.num_workers,
        distributed=distributed,
        pin_memory=device.type == "cuda",
    )


def input_size(recipe: Recipe) -> tuple[int, int, int]:
    """(channels, height, width) of one input image of the recipe."""
    info = dataset_info(recipe.dataset)
    side = recipe.image_size or info.image_size
    return info.in_chans, side, side
