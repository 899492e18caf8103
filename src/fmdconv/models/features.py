"""Multi-scale feature maps for detection and segmentation (``create_model(..., features_only=True)``).

Each backbone describes its five feature levels in ``feature_info`` (level 0 at stride 2 with the
ImageNet stem, then strides 4, 8, 16, 32) and computes them in ``forward_features``. Turning a model
into a feature extractor removes its classifier and makes ``forward`` return the maps of the chosen
levels; the remaining parameters keep their names, so a classification checkpoint loads with
``strict=False`` (only the classifier keys are unexpected). The ODConv paper plugs its backbones
into Faster/Mask R-CNN with FPN in this way (levels 1-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureInfo:
    """One feature level: the module whose output it is, its channels and its stride (reduction)."""

    module: str
    channels: int
    reduction: int


class FeatureBackbone(nn.Module):
    """Base of the backbones: classification by default, feature maps after :meth:`to_features`.

    Subclasses set ``feature_info`` and ``head_names`` (the classifier modules) and implement
    ``forward_features`` (all levels) and ``forward_head`` (pooled logits from the last level).
    """

    head_names: tuple[str, ...] = ()
    feature_info: list[FeatureInfo]

    def __init__(self) -> None:
        super().__init__()
        self.out_indices: tuple[int, ...] | None = None

    def forward_features(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def forward_head(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def to_features(self, out_indices: Sequence[int] = (1, 2, 3, 4)) -> FeatureBackbone:
        """Drop the classifier; ``forward`` then returns the maps of levels ``out_indices``, in order."""
        levels = len(self.feature_info)
        indices = tuple(out_indices)
        if not indices or any(not isinstance(i, int) or not 0 <= i < levels for i in indices):
            raise ValueError(
                f"out_indices must be a non-empty sequence of ints in [0, {levels}), got {out_indices!r}"
            )
        if len(set(indices)) != len(indices) or list(indices) != sorted(indices):
            raise ValueError(f"out_indices must be increasing without repeats, got {out_indices!r}")
        for name in self.head_names:
            delattr(self, name)
        self.out_indices = indices
        return self

    @property
    def out_feature_info(self) -> list[FeatureInfo]:
        """The levels ``forward`` returns (all five for a classification model)."""
        indices = range(len(self.feature_info)) if self.out_indices is None else self.out_indices
        return [self.feature_info[i] for i in indices]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        maps = self.forward_features(x)
        if self.out_indices is None:
            return self.forward_head(maps[-1])
        return [maps[i] for i in self.out_indices]
