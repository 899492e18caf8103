"""The learning-rate schedule of a run: linear warm-up, then a step decay or a half-cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fmdconv.train.recipe import Recipe


@dataclass(frozen=True)
class LearningRateSchedule:
    """The factor applied to the base learning rate in optimizer step ``step`` (counted from 0).

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
