"""The training loop: :func:`train` and the :class:`Trainer` behind it.

:func:`train` runs a :class:`~fmdconv.train.recipe.Recipe` into an output folder: SGD with
momentum, a per-iteration learning-rate schedule (:mod:`fmdconv.train.schedule`), label smoothing,
optional mixed precision (:mod:`fmdconv.train.precision`), and the papers' temperature schedules
stepped every iteration. After each epoch it re-estimates the BatchNorm statistics with the epoch's
final weights (:func:`~fmdconv.train.evaluation.recalibrate_batchnorm`,
``recipe.precise_bn_images``), evaluates on the test split, writes ``last.pt`` (and ``best.pt``
when top-1 improves) atomically, and logs the epoch to ``metrics.jsonl`` and TensorBoard. The run
owns its folder for its whole life (:mod:`fmdconv.train.run_lock`).

Exact resumption: a checkpoint is written at each epoch end with the model, the optimizer, the
iteration counter (which determines the learning rate and the temperatures), and the generator
states; the training data order depends only on ``(seed, epoch)``
(:func:`~fmdconv.train.seeding.epoch_seed`), so a run resumed from the checkpoint of epoch e
computes exactly what the uninterrupted run computed after epoch e. A killed run loses only its
unfinished epoch. Several processes: :mod:`fmdconv.train.distributed`.

The module is one class, the loop, whose steps share the run's state (model, optimizer, schedules,
logger, lock); every concern it calls on has a module of its own, listed in :mod:`fmdconv.train`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fmdconv.layers import disabled_attentions, restore_disabled_attentions
from fmdconv.train.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from fmdconv.train.compilation import compile_for_training
from fmdconv.train.construction import (
    build_model,
    build_optimizer,
    build_split,
    build_temperature_scheduler,
    build_test_loader,
    build_train_loader,
)
from fmdconv.train.distributed import (
    all_reduce_sum,
    broadcast_from_main,
    init_distributed,
    per_process_batch_size,
    unwrap,
    wrap_for_processes,
)
from fmdconv.train.evaluation import EvalResult, evaluate, precise_batchnorm
from fmdconv.train.health import (
    AttentionProbe,
    EpochHealth,
    GradientSpikeDetector,
    global_grad_norm,
    spike_warning,
)
from fmdconv.train.logging import MetricsLogger, is_logged_step
from fmdconv.train.precision import autocast, check_precision
from fmdconv.train.progress import ProgressBar
from fmdconv.train.recipe import Recipe
from fmdconv.train.resume import checkpoint_to_resume, resumed_recipe
from fmdconv.train.run_lock import RunLock
from fmdconv.train.schedule import LearningRateSchedule
from fmdconv.train.seeding import seed_everything
from fmdconv.utils.allocator import keep_freed_memory_once
from fmdconv.utils.devices import resolve_device
from fmdconv.utils.io import copy_atomic


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


class Trainer:
    """One training run of ``recipe`` in ``out_dir``; see :func:`train`.

    ``model``: the network to train instead of ``build_model(recipe)`` (an instrumented copy, say).
    It must be the network the recipe describes, since checkpoints are loaded into
    ``build_model(recipe)``; it is moved to the device and starts from the weights it was built with.

    The run holds its folder's lock from construction until :meth:`run` ends or :meth:`close`
    is called; a constructor that fails releases it.
    """

    def __init__(
        self,
        recipe: Recipe,
        out_dir: str | Path,
        resume: bool | str | Path = False,
        device: str | torch.device | None = None,
        progress: bool = True,
        tensorboard: bool = True,
        model: nn.Module | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.context = init_distributed(resolve_device(device))
        self.device = resolve_device(device, self.context.local_rank)
        self.lock = RunLock(self.out_dir)
        try:
            if self.context.is_main:
                self.lock.acquire()
            self._set_up(recipe, resume, tensorboard, model)  # its last step opens the logger
        except BaseException:
            self.lock.release()
            self.context.close()
            raise

    def _set_up(
        self, recipe: Recipe, resume: bool | str | Path, tensorboard: bool, model: nn.Module | None
    ) -> None:
        checkpoint = checkpoint_to_resume(self.out_dir, resume)
        if checkpoint is not None:
            recipe = resumed_recipe(checkpoint, recipe)
        self.recipe = recipe
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        elif self.device.type == "cpu":  # freed buffers stay with the process (fmdconv.utils.allocator)
            keep_freed_memory_once()
        check_precision(self.device, recipe.precision)
        self.batch_size = per_process_batch_size(recipe.batch_size, self.context)
        seed_everything(recipe.seed)
        self._build_data()
        self.model = (build_model(recipe) if model is None else model).to(self.device)
        self.optimizer = build_optimizer(self.model, recipe)
        self.lr_schedule = LearningRateSchedule.from_recipe(recipe, self.iters_per_epoch)
        self.temperature = build_temperature_scheduler(self.model, recipe, self.iters_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=recipe.precision == "fp16")
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_top1 = -1.0
        self.best_epoch = 0
        if checkpoint is not None:
            self._restore(checkpoint)
        self._set_learning_rate()
        self.model = wrap_for_processes(self.model, self.device, self.context)
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

    def _build_data(self) -> None:
        recipe = self.recipe
        self.train_set = build_split(recipe, "train")
        self.test_set = build_split(recipe, "test")
        if len(self.train_set) < recipe.batch_size:
            raise ValueError(
                f"batch_size ({recipe.batch_size}) must not exceed the {len(self.train_set)} training images"
            )
        self.iters_per_epoch = len(self._train_loader(0))
        self.test_loader = build_test_loader(self.test_set, recipe, self.context.distributed, self.device)

    @property
    def iteration(self) -> int:
        """Optimiser steps taken since the start of the run."""
        return self.temperature.iteration

    def close(self) -> None:
        """Close the logs and release the run folder (a no-op when already done)."""
        self.logger.close()
        self.lock.release()

    def _train_loader(self, epoch: int) -> DataLoader:
        return build_train_loader(
            self.train_set, self.recipe, self.batch_size, epoch, self.context.distributed, self.device
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

    def _learning_rate(self, iteration: int) -> float:
        """The learning rate of the step that brings the run to ``iteration`` steps (from 1)."""
        return self.recipe.lr * self.lr_schedule(iteration - 1)

    def _set_learning_rate(self) -> None:
        """Give the optimizer the learning rate of the next step."""
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate(self.iteration + 1)

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
        loader = self._train_loader(self.epoch)
        self.model.train()
        bar = ProgressBar(
            len(loader),
            f"epoch {self.epoch + 1}/{self.recipe.epochs}",
            enabled=self.progress and self.context.is_main,
        )
        sums = [0.0, 0.0, 0.0]  # loss, top-1 hits, images (this process)
        health = EpochHealth()
        start = time.perf_counter()
        for step, (images, labels) in enumerate(self._batches(loader), 1):
            loss, hits = self._train_step(images, labels, is_logged_step(step, len(loader)), health)
            sums = [sums[0] + loss * labels.numel(), sums[1] + hits, sums[2] + labels.numel()]
            bar.update(
                labels.numel() * self.context.world_size, loss=sums[0] / sums[2], acc=sums[1] / sums[2]
            )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        loss_sum, hits, images = all_reduce_sum(sums, self.context, self.device)
        return {
            "lr": self._learning_rate(self.iteration),
            "train_loss": loss_sum / images,
            "train_top1": hits / images,
            "train_seconds": seconds,
            "train_images_per_second": images / seconds,
            "grad_norm_max": health.epoch_max,
            "grad_spikes": health.spikes,
            **health.attentions,
        }

    def _train_step(
        self, images: Tensor, labels: Tensor, logged: bool, health: EpochHealth
    ) -> tuple[float, float]:
        """One optimizer step on a batch: its mean loss and top-1 hits.

        A logged step runs eagerly with the attention probe and writes a step record.
        """
        temperatures = self.temperature.step()
        probe = self.attention_probe.record() if logged else contextlib.nullcontext(None)
        with autocast(self.device, self.recipe.precision), probe as attention_stats:
            logits = (self.model if logged else self.compiled_model)(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.recipe.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss.item()} at iteration {self.iteration}: lower the "
                "learning rate" + ("" if self.recipe.precision == "fp32" else " or use precision fp32")
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.recipe.clip_grad_norm is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_grad_norm)
        else:
            grad_norm = global_grad_norm(self.model.parameters())
        self._check_gradient_norm(float(grad_norm), health)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._set_learning_rate()
        batch_loss = loss.item()
        if logged:
            if attention_stats is not None:
                health.attentions = attention_stats.as_record()
            self._log_step(batch_loss, temperatures, health)
        return batch_loss, float((logits.argmax(1) == labels).sum())

    def _log_step(self, loss: float, temperatures: dict[str, float], health: EpochHealth) -> None:
        self.logger.log(
            {
                "kind": "step",
                "epoch": self.epoch + 1,
                "iteration": self.iteration,
                "loss": loss,
                "lr": self._learning_rate(self.iteration),  # the rate this step ran with
                "gate_temperature": temperatures["gate"],
                "kernel_temperature": temperatures["kernel"],
                "grad_norm": health.last_norm,
                "grad_norm_max": health.take_interval_max(),
                **health.attentions,
            }
        )

    def _check_gradient_norm(self, norm: float, health: EpochHealth) -> None:
        """Track ``norm``; warn (stderr and the metrics log) at an epoch's first gradient spike."""
        level = self.spike_detector.update(norm)
        if not health.add(norm, level) or level is None:
            return
        message = spike_warning(norm, level, self.spike_detector.factor, self.iteration)
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
        # A loader of its own, seeded by (seed, epoch), and forked generators (augmentation,
        # dropout): training draws exactly what it draws without recalibration.
        loader = self._train_loader(self.epoch)
        return precise_batchnorm(unwrap(self.model), loader, self.recipe.precision, images, self.context)

    def _evaluate(self) -> EvalResult:
        """The model on the test split; every process evaluates rank 0's buffers (BatchNorm statistics)."""
        model = unwrap(self.model)
        broadcast_from_main(list(model.buffers()), self.context)
        return evaluate(
            model,
            self.test_loader,
            self.device,
            self.recipe.precision,
            self.context,
            description=f"test  {self.epoch + 1}/{self.recipe.epochs}",
            progress=self.progress,
        )

    def _epoch_record(self, training: dict[str, Any], result: EvalResult) -> dict[str, Any]:
        temperatures = self.temperature.values()
        return {
            "kind": "epoch",
            "epoch": self.epoch,
            "iteration": self.iteration,
            **training,
            "test_loss": result.loss,
            "test_top1": result.top1,
            "test_top5": result.top5,
            "test_images": result.images,
            "eval_seconds": result.seconds,
            "gate_temperature": temperatures["gate"],
            "kernel_temperature": temperatures["kernel"],
        }

    def _finish_epoch(self, record: dict[str, Any]) -> None:
        """Keep the epoch's record, write the checkpoints (rank 0) and log the epoch."""
        self.history.append(record)
        improved = record["test_top1"] > self.best_top1
        if improved:
            self.best_top1, self.best_epoch = record["test_top1"], self.epoch
        if self.context.is_main:
            save_checkpoint(self.out_dir / LAST_CHECKPOINT, self._checkpoint_state())
            if improved:
                copy_atomic(self.out_dir / LAST_CHECKPOINT, self.out_dir / BEST_CHECKPOINT)
            self.logger.log(record)
            print(_epoch_summary(record, self.recipe.epochs), file=sys.stderr)

    def run(self) -> TrainResult:
        """Train the remaining epochs, evaluating and checkpointing after each; then :meth:`close`."""
        if self.epoch and self.context.is_main:
            print(
                f"resuming {self.out_dir} after epoch {self.epoch} (iteration {self.iteration})",
                file=sys.stderr,
            )
        try:
            while self.epoch < self.recipe.epochs:
                training = self._train_epoch()
                training.update(self._recalibrate_batchnorm())
                result = self._evaluate()
                self.epoch += 1
                self._finish_epoch(self._epoch_record(training, result))
            self.context.finish()
        finally:
            self.close()
        return TrainResult(self.out_dir, self.recipe, self.history, self.best_top1, self.best_epoch)


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
    model: nn.Module | None = None,
) -> TrainResult:
    """Train ``recipe`` into ``out_dir`` and return the per-epoch history.

    Args:
        recipe: all settings of the run.
        out_dir: folder for ``last.pt``, ``best.pt``, ``metrics.jsonl`` and ``tensorboard/``; the run
            holds its lock file ``run.lock`` while it runs.
        resume: False for a fresh run (``out_dir`` must not hold one), True to continue from
            ``out_dir/last.pt``, or the path of a checkpoint. A resumed run uses the checkpoint's
            recipe; only ``data_dir``, ``num_workers``, ``epochs`` and ``compile`` may differ in
            ``recipe``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when available.
        progress: draw progress bars on stderr (rank 0 only).
        tensorboard: also write TensorBoard scalars.
        model: the network to train instead of ``build_model(recipe)`` (see :class:`Trainer`).

    Raises:
        ValueError: bad settings, an ``out_dir`` that already holds a run while ``resume`` is False,
            or a resume that changes other settings.
        RunFolderInUseError: another live process is running in ``out_dir``.
        DatasetNotFoundError: the dataset's files are missing (the message says where to get them).
    """
    trainer = Trainer(recipe, out_dir, resume, device, progress, tensorboard, model)
    try:
        return trainer.run()
    finally:
        trainer.context.close()
