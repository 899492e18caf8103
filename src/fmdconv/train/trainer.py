"""Training and evaluation loops: one process, or many through ``torchrun`` and DDP.

:func:`train` runs a :class:`~fmdconv.train.recipe.Recipe` into an output folder: SGD with
momentum, a per-iteration learning-rate schedule (step or cosine, with linear warm-up), label
smoothing, optional mixed precision, and the papers' temperature schedules stepped every iteration.
After each epoch it re-estimates the BatchNorm statistics with the epoch's final weights
(:func:`recalibrate_batchnorm`, ``recipe.precise_bn_images``), evaluates on the test split, writes
``last.pt`` (and ``best.pt`` when top-1 improves) atomically, and logs the epoch to
``metrics.jsonl`` and TensorBoard.

Exact resumption: a checkpoint is written at each epoch end with the model, the optimiser, the
iteration counter (which determines the learning rate and the temperatures), and the generator
states; the training data order depends only on ``(seed, epoch)`` (the loader is rebuilt each epoch
with a seed derived from both), so a run resumed from the checkpoint of epoch e computes exactly
what the uninterrupted run computed after epoch e. A killed run loses only its unfinished epoch.

Distributed: when launched by ``torchrun`` with more than one process (``WORLD_SIZE`` > 1), the
process group is initialised (NCCL on CUDA, gloo on CPU), the model is wrapped in
DistributedDataParallel, each process takes ``batch_size / world_size`` samples of each global batch
through a DistributedSampler, evaluation shards the test set without repeating samples and sums the
counts, and only rank 0 draws progress, logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from fmdconv.data import build_dataset, build_loader, dataset_info
from fmdconv.layers import (
    KERNEL_MIXTURES,
    TemperatureScheduler,
    disabled_attentions,
    restore_disabled_attentions,
)
from fmdconv.metrics import top_k_hits
from fmdconv.models import create_model
from fmdconv.train.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from fmdconv.train.compilation import compile_for_training
from fmdconv.train.health import AttentionProbe, GradientSpikeDetector, global_grad_norm
from fmdconv.train.logging import MetricsLogger
from fmdconv.train.progress import ProgressBar
from fmdconv.train.recipe import PRECISIONS, Recipe, recipe_differences, saved_recipe
from fmdconv.utils.allocator import keep_freed_memory_once
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.io import copy_atomic

STEP_RECORDS_PER_EPOCH = 10
# Settings a resumed run may change: where the data is, how it is loaded, and how long to train.
RESUMABLE_OVERRIDES = ("data_dir", "num_workers", "epochs", "compile")


@dataclass(frozen=True)
class LearningRateSchedule:
    """The factor applied to the base learning rate after ``step`` optimiser steps.

    Linear warm-up over ``warmup_epochs`` (the factor goes (1/W, 2/W, ..., 1) over the first W steps),
    times either a step decay (``gamma`` at each of ``milestones``, in epochs, switching at the first
    iteration of that epoch) or a half-cosine from 1 at the end of the warm-up to 0 at the end of
    training.
    """

    kind: str
    iters_per_epoch: int
    epochs: int
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    @classmethod
    def from_recipe(cls, recipe: Recipe, iters_per_epoch: int) -> LearningRateSchedule:
        return cls(
            recipe.schedule,
            iters_per_epoch,
            recipe.epochs,
            recipe.warmup_epochs,
            recipe.milestones,
            recipe.gamma,
        )

    def __call__(self, step: int) -> float:
        warmup_steps = round(self.warmup_epochs * self.iters_per_epoch)
        warmup = (step + 1) / warmup_steps if step < warmup_steps else 1.0
        if self.kind == "step":
            passed = sum(step >= milestone * self.iters_per_epoch for milestone in self.milestones)
            return warmup * self.gamma**passed
        total = self.epochs * self.iters_per_epoch
        progress = min(1.0, max(0, step - warmup_steps) / max(1, total - warmup_steps))
        return warmup * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class EpochHealth:
    """Gradient norms and attention statistics gathered during one training epoch.

    ``attentions``: the :class:`~fmdconv.train.health.AttentionStats` record of the last logged
    step (``gate_saturation``, ``kernel_max_prob``; empty for a static model).
    """

    last_norm: float = 0.0
    epoch_max: float = 0.0
    interval_max: float = 0.0
    spikes: int = 0
    attentions: dict[str, float] = field(default_factory=dict)

    def add(self, norm: float) -> None:
        """Record one step's gradient norm (a non-finite one makes the maxima infinite)."""
        self.last_norm = norm
        self.epoch_max = max(self.epoch_max, norm) if math.isfinite(norm) else math.inf
        self.interval_max = max(self.interval_max, norm) if math.isfinite(norm) else math.inf

    def take_interval_max(self) -> float:
        """The largest norm since the previous call (or the epoch's start), then reset."""
        largest, self.interval_max = self.interval_max, 0.0
        return largest


@dataclass(frozen=True)
class EvalResult:
    """Accuracy and loss on a dataset (proportions in [0, 1]) and how long evaluation took."""

    top1: float
    top5: float
    loss: float
    images: int
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced.

    Attributes:
        out_dir: the run's folder (``last.pt``, ``best.pt``, ``metrics.jsonl``, ``tensorboard/``).
        recipe: the settings it ran with.
        history: one record per epoch (see ``metrics.jsonl``'s ``"epoch"`` records).
        best_top1, best_epoch: the best test top-1 and the epoch that reached it.
    """

    out_dir: Path
    recipe: Recipe
    history: list[dict[str, Any]]
    best_top1: float
    best_epoch: int

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record."""
        return self.history[-1]

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall time of the training part of an epoch (evaluation excluded)."""
        return float(np.mean([record["train_seconds"] for record in self.history]))


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: rank, number of processes, and its GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def close(self) -> None:
        """Leave the process group this context joined (a group the caller made is left alone).

        A gloo group still alive at interpreter exit can abort the process ("terminate called
        without an active exception") after the run has finished and written everything.
        """
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group described by torchrun's environment variables, if there is one.

    Without ``WORLD_SIZE`` (or with 1 process) the run is single-process. The backend is NCCL on
    CUDA and gloo on CPU; a group initialised by the caller is used as it is.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group)


def check_precision(device: torch.device, precision: str) -> None:
    """Raise a ValueError if ``precision`` is unknown or cannot run on ``device`` (fp16 needs CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (got {device}); use bf16 on CPU")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``precision`` (``fp32``: none; ``bf16``; ``fp16``, CUDA only)."""
    check_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch``'s data order, depending only on ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's backbone, sized for its dataset's classes and channels."""
    info = dataset_info(recipe.dataset)
    # attention_init initialises the attention paths of the kernel mixtures (cond, dy, od, fmd).
    uses_init = recipe.conv in KERNEL_MIXTURES
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


def input_size(recipe: Recipe) -> tuple[int, int, int]:
    """(channels, height, width) of one input image of the recipe."""
    info = dataset_info(recipe.dataset)
    side = recipe.image_size or info.image_size
    return info.in_chans, side, side


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _all_reduce_sum(values: list[float], context: DistributedContext, device: torch.device) -> list[float]:
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


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
    loss, top1, top5, count, nonfinite = _all_reduce_sum(sums, context, device)
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


class Trainer:
    """One training run of ``recipe`` in ``out_dir``; see :func:`train`."""

    def __init__(
        self,
        recipe: Recipe,
        out_dir: str | Path,
        resume: bool | str | Path = False,
        device: str | torch.device | None = None,
        progress: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        checkpoint = self._checkpoint_to_resume(resume)
        if checkpoint is not None:
            recipe = self._resumed_recipe(checkpoint, recipe)
        self.recipe = recipe
        self.progress = progress
        self.device = resolve_device(device)
        self.context = init_distributed(self.device)
        self.device = resolve_device(device, self.context.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        elif self.device.type == "cpu":  # freed buffers stay with the process (fmdconv.utils.allocator)
            keep_freed_memory_once()
        check_precision(self.device, recipe.precision)
        if recipe.batch_size % self.context.world_size:
            raise ValueError(
                f"batch_size ({recipe.batch_size}) must be divisible by the number of processes "
                f"({self.context.world_size})"
            )
        self.batch_size = recipe.batch_size // self.context.world_size

        seed_everything(recipe.seed)
        self.train_set = build_split(recipe, "train")
        self.test_set = build_split(recipe, "test")
        if len(self.train_set) < recipe.batch_size:
            raise ValueError(
                f"batch_size ({recipe.batch_size}) must not exceed the {len(self.train_set)} training images"
            )
        self.iters_per_epoch = len(self._train_loader(0))
        self.test_loader = build_loader(
            self.test_set,
            recipe.eval_batch_size or recipe.batch_size,
            train=False,
            num_workers=recipe.num_workers,
            distributed=self.context.distributed,
            pin_memory=self.device.type == "cuda",
        )

        self.model = build_model(recipe).to(self.device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
        self.lr_schedule = LearningRateSchedule.from_recipe(recipe, self.iters_per_epoch)
        self.temperature = TemperatureScheduler.for_paper(
            self.model,
            self.iters_per_epoch,
            warm_epochs=recipe.temperature_warm_epochs,
            kernel_mode=recipe.kernel_temperature,
            gate_start=recipe.gate_temperature_start,
            kernel_start=recipe.kernel_temperature_start,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=recipe.precision == "fp16")
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_top1 = -1.0
        self.best_epoch = 0
        if checkpoint is not None:
            self._restore(checkpoint)
        self._set_learning_rate()
        if self.context.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=device_ids)
        # Logged steps run eagerly, for the attention probe's hooks (docs/training.md, "Compiled training").
        self.compiled_model = compile_for_training(self.model) if recipe.compile else self.model
        self.attention_probe = AttentionProbe(unwrap(self.model))
        self.spike_detector = GradientSpikeDetector()
        self.logger = MetricsLogger(
            self.out_dir,
            enabled=self.context.is_main,
            tensorboard=tensorboard,
            resume_iteration=self.iteration,
        )

    @property
    def iteration(self) -> int:
        """Optimiser steps taken since the start of the run."""
        return self.temperature.iteration

    def _checkpoint_to_resume(self, resume: bool | str | Path) -> dict[str, Any] | None:
        last = self.out_dir / LAST_CHECKPOINT
        if resume is False:
            if last.exists():
                raise ValueError(
                    f"{self.out_dir} already holds a run ({last}); "
                    "resume it (--resume) or choose another --out"
                )
            return None
        return load_checkpoint(last if resume is True else Path(resume))

    @staticmethod
    def _resumed_recipe(checkpoint: dict[str, Any], requested: Recipe) -> Recipe:
        """The checkpoint's recipe, with the changes a resumed run allows taken from ``requested``."""
        saved = saved_recipe(checkpoint["recipe"])
        if requested.epochs < checkpoint["epoch"]:
            raise ValueError(
                f"cannot resume with epochs={requested.epochs}: the checkpoint has already trained "
                f"{checkpoint['epoch']} epochs; give --epochs {checkpoint['epoch']} or more, or train a new "
                "run in another --out"
            )
        changed = recipe_differences(saved, requested, ignore=RESUMABLE_OVERRIDES)
        if changed:
            raise ValueError(
                f"cannot resume with different {', '.join(changed)} (the checkpoint's recipe has "
                + ", ".join(f"{name}={value!r}" for name, (value, _) in changed.items())
                + f"); only {', '.join(RESUMABLE_OVERRIDES)} may change"
            )
        return saved.replace(**{name: getattr(requested, name) for name in RESUMABLE_OVERRIDES})

    def _train_loader(self, epoch: int) -> DataLoader:
        return build_loader(
            self.train_set,
            self.batch_size,
            train=True,
            num_workers=self.recipe.num_workers,
            distributed=self.context.distributed,
            seed=epoch_seed(self.recipe.seed, epoch),
            pin_memory=self.device.type == "cuda",
        )

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        restore_disabled_attentions(self.model, checkpoint.get("disabled_attentions", {}))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.temperature.load_state_dict(checkpoint["temperature"])
        if checkpoint.get("grad_scaler"):
            self.scaler.load_state_dict(checkpoint["grad_scaler"])
        self.epoch = checkpoint["epoch"]
        self.history = list(checkpoint["history"])
        self.best_top1 = checkpoint["best_top1"]
        self.best_epoch = checkpoint["best_epoch"]
        set_rng_state(checkpoint["rng"])

    def _set_learning_rate(self) -> float:
        lr = self.recipe.lr * self.lr_schedule(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "disabled_attentions": disabled_attentions(unwrap(self.model)),
            "optimizer": self.optimizer.state_dict(),
            "temperature": self.temperature.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "epoch": self.epoch,
            "iteration": self.iteration,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "rng": rng_state(),
            "recipe": self.recipe.to_dict(),
        }

    def _batches(self, loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _train_epoch(self) -> dict[str, Any]:
        recipe = self.recipe
        loader = self._train_loader(self.epoch)
        self.model.train()
        bar = ProgressBar(
            len(loader),
            f"epoch {self.epoch + 1}/{recipe.epochs}",
            enabled=self.progress and self.context.is_main,
        )
        iterations = len(loader)
        sums = [0.0, 0.0, 0.0]  # loss, top-1 hits, images (this process)
        health = EpochHealth()
        start = time.perf_counter()
        for step, (images, labels) in enumerate(self._batches(loader), 1):
            temperatures = self.temperature.step()
            # Evenly spaced, ending at the epoch's last step: exactly min(STEP_RECORDS_PER_EPOCH, steps).
            logged = (
                step * STEP_RECORDS_PER_EPOCH // iterations
                > (step - 1) * STEP_RECORDS_PER_EPOCH // iterations
            )
            probe = self.attention_probe.record() if logged else contextlib.nullcontext(None)
            with autocast(self.device, recipe.precision), probe as attention_stats:
                logits = (self.model if logged else self.compiled_model)(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {loss.item()} at iteration {self.iteration}: lower the "
                    "learning rate" + ("" if recipe.precision == "fp32" else " or use precision fp32")
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if recipe.clip_grad_norm is not None:
                grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), recipe.clip_grad_norm)
            else:
                grad_norm = global_grad_norm(self.model.parameters())
            self._check_gradient_norm(float(grad_norm), health)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self._set_learning_rate()
            batch_loss = loss.item()
            sums[0] += batch_loss * labels.numel()
            sums[1] += float((logits.argmax(1) == labels).sum())
            sums[2] += labels.numel()
            bar.update(
                labels.numel() * self.context.world_size, loss=sums[0] / sums[2], acc=sums[1] / sums[2]
            )
            if logged:
                if attention_stats is not None:
                    health.attentions = attention_stats.as_record()
                self.logger.log(
                    {
                        "kind": "step",
                        "epoch": self.epoch + 1,
                        "iteration": self.iteration,
                        "loss": batch_loss,
                        "lr": lr,
                        "gate_temperature": temperatures["gate"],
                        "kernel_temperature": temperatures["kernel"],
                        "grad_norm": health.last_norm,
                        "grad_norm_max": health.take_interval_max(),
                        **health.attentions,
                    }
                )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        loss_sum, hits, images = _all_reduce_sum(sums, self.context, self.device)
        return {
            "train_loss": loss_sum / images,
            "train_top1": hits / images,
            "train_seconds": seconds,
            "train_images_per_second": images / seconds,
            "grad_norm_max": health.epoch_max,
            "grad_spikes": health.spikes,
            **health.attentions,
        }

    def _check_gradient_norm(self, norm: float, health: EpochHealth) -> None:
        """Track ``norm``; warn (stderr and the metrics log) at an epoch's first gradient spike."""
        health.add(norm)
        level = self.spike_detector.update(norm)
        if level is None:
            return
        health.spikes += 1
        if health.spikes > 1:
            return
        message = (
            f"gradient norm {norm:.3g} at iteration {self.iteration} is more than "
            f"{self.spike_detector.factor:g}x its recent level {level:.3g}: the attentions may be "
            "collapsing (see gate_saturation / kernel_max_prob in metrics.jsonl and docs/training.md)"
        )
        self.logger.log(
            {
                "kind": "warning",
                "epoch": self.epoch + 1,
                "iteration": self.iteration,
                "grad_norm": norm,
                "grad_norm_level": level,
                "message": message,
            }
        )
        if self.context.is_main:
            print(f"warning: {message}", file=sys.stderr)

    def _recalibrate_batchnorm(self) -> dict[str, Any]:
        """Precise BN before evaluation (``recipe.precise_bn_images``; 0 skips it)."""
        images = self.recipe.precise_bn_images
        if images == 0:
            return {}
        start = time.perf_counter()
        # A loader of its own, seeded by (seed, epoch), and forked generators (augmentation,
        # dropout): training draws exactly what it draws without recalibration.
        loader = self._train_loader(self.epoch)
        batches = (batch for batch, _ in loader)
        per_process = math.ceil(images / self.context.world_size)
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        model = unwrap(self.model)
        with torch.random.fork_rng(devices=cuda_devices):
            used = recalibrate_batchnorm(model, batches, self.recipe.precision, per_process)
        if self.context.distributed:
            # Every rank ran as many equal batches (drop_last, padded sampler): the mean of the ranks'
            # averages is the average over all of them.
            for norm in batchnorm_layers(model):
                for statistic in (norm.running_mean, norm.running_var):
                    dist.all_reduce(statistic)
                    statistic /= self.context.world_size
        return {
            "precise_bn_images": used * self.context.world_size,
            "precise_bn_seconds": time.perf_counter() - start,
        }

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), so all ranks evaluate one model."""
        if self.context.distributed:
            for buffer in unwrap(self.model).buffers():
                dist.broadcast(buffer, 0)

    def run(self) -> TrainResult:
        """Train the remaining epochs, evaluating and checkpointing after each."""
        recipe = self.recipe
        if self.epoch and self.context.is_main:
            print(
                f"resuming {self.out_dir} after epoch {self.epoch} (iteration {self.iteration})",
                file=sys.stderr,
            )
        try:
            while self.epoch < recipe.epochs:
                record = self._train_epoch()
                record.update(self._recalibrate_batchnorm())
                self._sync_buffers()
                result = evaluate(
                    unwrap(self.model),
                    self.test_loader,
                    self.device,
                    recipe.precision,
                    self.context,
                    description=f"test  {self.epoch + 1}/{recipe.epochs}",
                    progress=self.progress,
                )
                self.epoch += 1
                temperatures = self.temperature.values()
                record = {
                    "kind": "epoch",
                    "epoch": self.epoch,
                    "iteration": self.iteration,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    **record,
                    "test_loss": result.loss,
                    "test_top1": result.top1,
                    "test_top5": result.top5,
                    "test_images": result.images,
                    "eval_seconds": result.seconds,
                    "gate_temperature": temperatures["gate"],
                    "kernel_temperature": temperatures["kernel"],
                }
                self.history.append(record)
                improved = result.top1 > self.best_top1
                if improved:
                    self.best_top1, self.best_epoch = result.top1, self.epoch
                if self.context.is_main:
                    save_checkpoint(self.out_dir / LAST_CHECKPOINT, self._checkpoint_state())
                    if improved:
                        copy_atomic(self.out_dir / LAST_CHECKPOINT, self.out_dir / BEST_CHECKPOINT)
                    self.logger.log(record)
                    print(_epoch_summary(record, recipe.epochs), file=sys.stderr)
        finally:
            self.logger.close()
        return TrainResult(self.out_dir, recipe, self.history, self.best_top1, self.best_epoch)


def _epoch_summary(record: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f} "
        f"top-1 {record['train_top1']:.2%} | test top-1 {record['test_top1']:.2%} "
        f"top-5 {record['test_top5']:.2%} | {record['train_seconds']:.1f} s, "
        f"{record['train_images_per_second']:.0f} img/s"
    )


def train(
    recipe: Recipe,
    out_dir: str | Path,
    resume: bool | str | Path = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    tensorboard: bool = True,
) -> TrainResult:
    """Train ``recipe`` into ``out_dir`` and return the per-epoch history.

    Args:
        recipe: all settings of the run.
        out_dir: folder for ``last.pt``, ``best.pt``, ``metrics.jsonl`` and ``tensorboard/``.
        resume: False for a fresh run (``out_dir`` must not hold one), True to continue from
            ``out_dir/last.pt``, or the path of a checkpoint. A resumed run uses the checkpoint's
            recipe; only ``data_dir``, ``num_workers`` and ``epochs`` may differ in ``recipe``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when available.
        progress: draw progress bars on stderr (rank 0 only).
        tensorboard: also write TensorBoard scalars.

    Raises:
        ValueError: bad settings, an ``out_dir`` that already holds a run while ``resume`` is False,
            or a resume that changes other settings.
        DatasetNotFoundError: the dataset's files are missing (the message says where to get them).
    """
    trainer = Trainer(recipe, out_dir, resume, device, progress, tensorboard)
    try:
        return trainer.run()
    finally:
        trainer.context.close()
