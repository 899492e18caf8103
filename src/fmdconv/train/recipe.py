"""Training recipes: every setting of a run in one dataclass, stored as JSON files.

The packaged recipes live in ``fmdconv/recipes/*.json`` and are loaded by name
(``load_recipe("cifar")``) or any JSON file by path. A file lists only the fields it sets; the
others keep their defaults. Command-line flags override single fields (:meth:`Recipe.replace`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fmdconv.layers import (
    ATTENTION_INITS,
    CONV_KINDS,
    FEATURE_ATTENTIONS,
    KERNEL_MODES,
    conv_info,
    conv_names,
)

LR_SCHEDULES = ("step", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")
STEMS = ("imagenet", "cifar")


def _setting(default: Any, help: str) -> Any:
    """A recipe field with its help text (shown by ``fmdconv train --help``)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Recipe:
    """All settings of one training run (model, data, optimisation, temperatures, precision).

    Epoch counts that may be fractional (warm-ups) are floats; the lr schedule and the temperature
    schedule are both evaluated per iteration.
    """

    model: str = _setting("resnet18", "backbone name (see fmdconv.models.list_models())")
    conv: str = _setting("fmd", f"convolution of the backbone's blocks: {', '.join(CONV_KINDS)}")
    attention: str | None = _setting(
        None, f"feature attention on each ResNet block's branch: {', '.join(FEATURE_ATTENTIONS)} (None: none)"
    )
    kernel_num: int = _setting(4, "number of kernels n of the dynamic convolutions")
    width: float = _setting(1.0, "channel width multiplier of the backbone (all stages)")
    stem: str = _setting("imagenet", f"backbone stem: {', '.join(STEMS)}")
    dropout: float = _setting(0.0, "dropout probability before the classifier")
    attention_init: str = _setting(
        "zero",
        f"initialisation of the attention paths' last layers: {', '.join(ATTENTION_INITS)} "
        "(zero: stable when the temperatures reach 1; authors: Kaiming as the authors' code); "
        "methods without attention paths (static, the feature attentions, kw) refuse anything but zero",
    )
    dataset: str = _setting("fashion_mnist", "dataset name (see fmdconv.data.DATASETS)")
    data_dir: str | None = _setting(None, "folder holding the dataset, ~ expanded (None: its default place)")
    image_size: int | None = _setting(None, "training/eval image size (None: the dataset's own)")
    subset: int | None = _setting(None, "train on the first N training images only")
    test_subset: int | None = _setting(None, "evaluate on the first N test images only")
    epochs: int = _setting(100, "number of training epochs")
    batch_size: int = _setting(256, "global batch size (split evenly over DDP processes)")
    eval_batch_size: int | None = _setting(None, "evaluation batch size (None: batch_size)")
    lr: float = _setting(0.1, "peak learning rate")
    momentum: float = _setting(0.9, "SGD momentum")
    nesterov: bool = _setting(False, "use Nesterov momentum")
    weight_decay: float = _setting(1e-4, "SGD weight decay")
    schedule: str = _setting("step", f"learning-rate schedule: {', '.join(LR_SCHEDULES)}")
    milestones: tuple[int, ...] = _setting(
        (30, 60, 90), "epochs at which the step schedule multiplies lr by gamma"
    )
    gamma: float = _setting(0.1, "lr factor of each step-schedule milestone")
    warmup_epochs: float = _setting(0.0, "linear lr warm-up length in epochs (per iteration)")
    label_smoothing: float = _setting(0.0, "label smoothing of the cross-entropy loss")
    clip_grad_norm: float | None = _setting(
        None, "clip the global gradient norm to this value at every step (None: no clipping)"
    )
    temperature_warm_epochs: float = _setting(
        10.0, "epochs over which the attention temperatures anneal to 1 (docs/design.md, section 2)"
    )
    kernel_temperature: str = _setting("degraded", f"kernel-temperature schedule: {', '.join(KERNEL_MODES)}")
    gate_temperature_start: float | None = _setting(None, "initial gate temperature (None: 30)")
    kernel_temperature_start: float | None = _setting(
        None, "initial kernel temperature (None: the method's, FMDConv 34, others 30)"
    )
    precise_bn_images: int = _setting(
        2048,
        "before each evaluation, re-estimate the BatchNorm statistics over this many training images "
        "with the epoch's final weights (0: keep the running averages, which lag while the "
        "temperatures anneal; docs/training.md)",
    )
    precision: str = _setting("fp32", f"arithmetic: {', '.join(PRECISIONS)} (fp16 needs CUDA)")
    compile: bool = _setting(
        False,
        "run the training steps through torch.compile (inductor, CPU or CUDA; the first steps compile, "
        "which takes minutes on a small CPU; docs/training.md)",
    )
    seed: int = _setting(0, "seed of weights, data order and augmentation")
    num_workers: int = _setting(0, "data-loading worker processes per training process")

    def __post_init__(self) -> None:
        if isinstance(self.milestones, list):
            object.__setattr__(self, "milestones", tuple(self.milestones))
        _check_types(self)
        for name, accepted in (
            ("conv", CONV_KINDS),
            ("attention_init", ATTENTION_INITS),
            ("stem", STEMS),
            ("schedule", LR_SCHEDULES),
            ("kernel_temperature", KERNEL_MODES),
            ("precision", PRECISIONS),
        ):
            if getattr(self, name) not in accepted:
                raise ValueError(f"{name} must be one of {', '.join(accepted)}; got {getattr(self, name)!r}")
        if self.attention is not None and self.attention not in FEATURE_ATTENTIONS:
            raise ValueError(
                f"attention must be None or one of {', '.join(FEATURE_ATTENTIONS)}; got {self.attention!r}"
            )
        for name in ("kernel_num", "epochs", "batch_size"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("subset", "test_subset", "eval_batch_size", "image_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("num_workers", self.num_workers, minimum=0)
        _check_int("precise_bn_images", self.precise_bn_images, minimum=0)
        for name in ("width", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)!r}")
        for name in ("momentum", "dropout", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)!r}")
        for name in ("weight_decay", "warmup_epochs", "temperature_warm_epochs"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)!r}")
        for name in ("clip_grad_norm", "gate_temperature_start", "kernel_temperature_start"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 or None; got {getattr(self, name)!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1]; got {self.gamma!r}")
        integers = all(isinstance(m, int) and not isinstance(m, bool) for m in self.milestones)
        if (
            not integers
            or list(self.milestones) != sorted(set(self.milestones))
            or min(self.milestones, default=1) < 1
        ):
            raise ValueError(f"milestones must be increasing epochs >= 1; got {self.milestones!r}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must not exceed epochs ({self.epochs})")
        check_method_settings(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        """Build a recipe from a mapping of field values; unknown keys raise a ValueError."""
        _check_keys(values)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with some fields changed; unknown names raise a ValueError listing the valid ones."""
        _check_keys(overrides)
        return dataclasses.replace(self, **overrides)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


# Settings added after runs were first saved, each with the value that reproduces what a run saved
# without it did: a reused or resumed old run is then compared and continued as it was trained.
PREDATED_SETTINGS: dict[str, Any] = {"attention_init": "authors", "precise_bn_images": 0}


def check_method_settings(recipe: Recipe) -> None:
    """A ValueError for a setting the recipe's method has no use for (its record says which it takes):
    ``attention_init`` other than the default with a method that has no attention path to start."""
    info = conv_info(recipe.conv)
    if recipe.attention_init != "zero" and not info.takes("attention_init"):
        takers = [name for name in conv_names() if conv_info(name).takes("attention_init")]
        on = f" with attention={recipe.attention!r}" if recipe.attention is not None else ""
        raise ValueError(
            f"attention_init={recipe.attention_init!r} does nothing for conv={recipe.conv!r}{on} "
            f"({info.label}): only {', '.join(takers)} take it; leave it at 'zero'"
        )


def saved_recipe(values: dict[str, Any]) -> Recipe:
    """The recipe stored with a run (a checkpoint's ``"recipe"``); see ``PREDATED_SETTINGS`` (whose
    ``attention_init`` applies to the methods that take one)."""
    conv = values.get("conv", Recipe.conv)
    without_init = conv in conv_names() and not conv_info(conv).takes("attention_init")
    predated = {k: v for k, v in PREDATED_SETTINGS.items() if not (without_init and k == "attention_init")}
    return Recipe.from_dict({**predated, **values})


def recipe_differences(
    first: Recipe, second: Recipe, ignore: Sequence[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """The settings (except ``ignore``) on which two recipes differ: name -> (first's, second's value)."""
    return {
        name: (getattr(first, name), getattr(second, name))
        for name in Recipe.field_names()
        if name not in ignore and getattr(first, name) != getattr(second, name)
    }


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")


def _check_types(recipe: Recipe) -> None:
    """Raise a ValueError naming the first field whose value has the wrong type."""
    for name, (base, optional) in recipe_field_types().items():
        value = getattr(recipe, name)
        if value is None and optional:
            continue
        accepted = (int, float) if base is float else (base,)
        if isinstance(value, bool) != (base is bool) or not isinstance(value, accepted):
            kind = {"int": "an int", "float": "a number", "str": "a string", "bool": "true or false"}.get(
                base.__name__, f"a {base.__name__}"
            )
            raise ValueError(f"{name} must be {kind}{' or None' if optional else ''}; got {value!r}")


def _check_keys(values: dict[str, Any]) -> None:
    unknown = sorted(set(values) - set(Recipe.field_names()))
    if unknown:
        raise ValueError(
            f"unknown recipe setting(s) {', '.join(unknown)}; "
            f"valid settings: {', '.join(Recipe.field_names())}"
        )


def recipe_field_types() -> dict[str, tuple[type, bool]]:
    """For each field: (its base type, whether it may be None); ``tuple[int, ...]`` is ``tuple``."""
    hints = typing.get_type_hints(Recipe)
    described: dict[str, tuple[type, bool]] = {}
    for name in Recipe.field_names():
        hint = hints[name]
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        described[name] = (typing.get_origin(base) or base, optional)
    return described


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with fmdconv."""
    folder = resources.files("fmdconv") / "recipes"
    return sorted(
        entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json")
    )


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a packaged recipe by name (``"cifar"``) or a JSON file by path.

    Raises:
        ValueError: the name is neither a packaged recipe nor an existing file, the file is not a
            JSON object, or it holds unknown settings (the message lists the valid ones).
    """
    text = str(name_or_path)
    packaged = resources.files("fmdconv") / "recipes" / f"{text}.json"
    if text in packaged_recipes():
        source, content = f"recipe {text!r}", packaged.read_text()
    elif Path(text).is_file():
        source, content = str(text), Path(text).read_text()
    else:
        raise ValueError(
            f"recipe must be a packaged recipe ({', '.join(packaged_recipes())}) or a JSON file; got {text!r}"
        )
    try:
        values = json.loads(content)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{source} must hold a JSON object of settings, got {type(values).__name__}")
    try:
        return Recipe.from_dict(values)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error
