"""Evaluation of a model (top-1, top-5, loss) and the BatchNorm re-estimation that precedes it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fmdconv.metrics import top_k_hits
from fmdconv.train.distributed import DistributedContext, all_reduce_sum, average_over_processes
from fmdconv.train.precision import autocast, check_precision
from fmdconv.train.progress import ProgressBar


@dataclass(frozen=True)
class EvalResult:
    """Accuracy and loss on a dataset (proportions in [0, 1]) and how long evaluation took."""

    top1: float
    top5: float
    loss: float
    images: int
    seconds: float


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    precision: str = "fp32",
    context: DistributedContext | None = None,
    description: str = "eval",
    progress: bool = True,
) -> EvalResult:
    """Top-1, top-5 and mean cross-entropy of ``model`` over ``loader`` (summed over DDP ranks).

    Raises:
        FloatingPointError: some images gave NaN or infinite logits (a diverged model): no accuracy
            is computed from them.
    """
    context = context or DistributedContext()
    model.eval()
    bar = ProgressBar(max(1, len(loader)), description, enabled=progress and context.is_main)
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss, top-1 hits, top-5 hits, images, images with non-finite logits
    start = time.perf_counter()
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        hits = top_k_hits(logits, labels, (1, 5))
        batch = [
            float(F.cross_entropy(logits, labels, reduction="sum")),
            float(hits[1]),
            float(hits[5]),
            float(labels.numel()),
            float((~torch.isfinite(logits).all(1)).sum()),
        ]
        sums = [total + value for total, value in zip(sums, batch, strict=True)]
        bar.update(labels.numel(), top1=sums[1] / sums[3])
    loss, top1, top5, count, nonfinite = all_reduce_sum(sums, context, device)
    if count == 0:
        raise ValueError("the evaluation set is empty")
    if nonfinite or not math.isfinite(loss):
        raise FloatingPointError(
            f"{description}: the model's outputs are NaN or infinite for {int(nonfinite)} of {int(count)} "
            f"images (mean loss {loss / count}): the model has diverged, so no accuracy is reported"
        )
    return EvalResult(top1 / count, top5 / count, loss / count, int(count), time.perf_counter() - start)


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: Iterable[Tensor], precision: str = "fp32", max_images: int | None = None
) -> int:
    """Replace every BatchNorm's running statistics by their mean over ``batches`` ("precise BN").

    Running averages (momentum 0.1) mix the statistics of the last few dozen steps' weights; while
    the attention temperatures anneal, a dynamic layer's output scale changes within fewer steps than
    that, and evaluation with the lagging statistics can lose most of the accuracy (docs/training.md).
    The model runs in training mode on whole ``batches`` (moved to its device) until it has seen
    ``max_images`` images or the batches end, and each layer's statistics become the plain average
    of the batches' statistics, as in Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021).
    Momentum, ``num_batches_tracked`` and every module's mode are restored, and so are the old
    statistics if no batch ran or the model raised. Returns the number of images used (0 when the
    model has no BatchNorm).

    Raises:
        ValueError: ``precision`` is unknown or cannot run on the model's device, ``max_images`` is
            below 1, or ``batches`` is empty.
    """
    if max_images is not None and (
        isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
    ):
        raise ValueError(f"max_images must be None or an int >= 1; got {max_images!r}")
    norms = batchnorm_layers(model)
    if not norms:
        return 0
    device = norms[0].running_mean.device
    check_precision(device, precision)
    saved = [
        (m.momentum, m.num_batches_tracked.clone(), m.running_mean.clone(), m.running_var.clone())
        for m in norms
    ]
    modes = [(module, module.training) for module in model.modules()]
    seen, finished = 0, False
    try:
        for module in norms:
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches
        model.train()
        for images in batches:
            if max_images is not None and seen >= max_images:
                break
            with autocast(device, precision):
                model(images.to(device, non_blocking=True))
            seen += images.shape[0]
        finished = seen > 0
    finally:
        for module, (momentum, tracked, mean, var) in zip(norms, saved, strict=True):
            module.momentum = momentum
            module.num_batches_tracked.copy_(tracked)
            if not finished:
                module.running_mean.copy_(mean)
                module.running_var.copy_(var)
        for module, training in modes:
            module.training = training
    if not finished:
        raise ValueError("recalibrate_batchnorm needs at least one batch")
    return seen


def precise_batchnorm(
    model: nn.Module,
    loader: DataLoader,
    precision: str,
    max_images: int,
    context: DistributedContext,
) -> dict[str, float]:
    """Precise BN in every process of a run: :func:`recalibrate_batchnorm` on the images of
    ``loader`` (their share of ``max_images``), then the mean over the processes.

    The generators are forked (augmentation and dropout draw as if nothing ran). Every process runs
    as many equal batches (whole batches, a padded sampler), so the mean of the processes' averages
    is the average over all their batches. Returns the epoch record's ``precise_bn_images`` (all
    processes together) and ``precise_bn_seconds``.
    """
    start = time.perf_counter()
    share = math.ceil(max_images / context.world_size)
    norms = batchnorm_layers(model)
    cuda_devices = [norms[0].running_mean.device] if norms and norms[0].running_mean.is_cuda else []
    with torch.random.fork_rng(devices=cuda_devices):
        used = recalibrate_batchnorm(model, (images for images, _ in loader), precision, share)
    statistics = [s for norm in norms for s in (norm.running_mean, norm.running_var)]
    average_over_processes(statistics, context)
    return {"precise_bn_images": used * context.world_size, "precise_bn_seconds": time.perf_counter() - start}
