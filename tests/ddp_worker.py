"""One process of a two-process DDP run for test_ddp.py (launched by torchrun; not a test itself).

Usage: ``torchrun --nproc-per-node 2 tests/ddp_worker.py OUT_DIR RECIPE_JSON``. Trains the recipe
with :class:`fmdconv.train.Trainer` and writes ``OUT_DIR/rank<r>.pt``: the model's initial
and final state and every batch this process trained on, in order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from fmdconv.train import Recipe, Trainer, unwrap


def main(out_dir: Path, recipe: Recipe) -> None:
    trainer = Trainer(recipe, out_dir / "run", device="cpu", progress=False, tensorboard=False)
    initial = {name: value.clone() for name, value in unwrap(trainer.model).state_dict().items()}
    batches: list[tuple[Tensor, Tensor]] = []
    load = trainer._batches

    def recorded(loader: object) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in load(loader):
            batches.append((images.clone(), labels.clone()))
            yield images, labels

    trainer._batches = recorded  # type: ignore[method-assign]
    trainer.run()
    final = unwrap(trainer.model).state_dict()
    torch.save(
        {"initial": initial, "final": final, "batches": batches}, out_dir / f"rank{dist.get_rank()}.pt"
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Recipe.from_dict(json.loads(sys.argv[2])))
