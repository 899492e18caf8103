"""The factors an ablation (:mod:`fmdconv.experiments.ablation`) varies, their values, and the checks
that a factor changes something for a recipe's model.

``temperature``
    the initial kernel temperature (recipe ``kernel_temperature_start``); the authors' study used
    34 (their code's default), 40, 52, 61 and 100 on CIFAR-100.
``kernel_num``
    the number of kernels n of every dynamic convolution.
``schedule``
    the kernel-temperature schedule (recipe ``kernel_temperature``): ``degraded`` (the paper),
    ``constant`` (the authors' released code), ``step`` (the DyConv code).
``attentions``
    the attentions kept: ``all``, ``none``, or names joined by ``+`` (``input+output``). The others
    are switched off with :func:`fmdconv.layers.set_attentions` (counting as 1) for the whole run,
    training and evaluation.

A factor that would change nothing is refused (a static model, a temperature of a method without
one, a layer option the method's convolution does not take, an attention the model lacks); a
temperature ablation whose annealing is over within the first iteration, where every value trains
the same model, warns.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fmdconv.explain.attention_cam import model_attentions
from fmdconv.layers import ATTENTION_NAMES, KERNEL_MODES, conv_info, conv_names, conv_type, set_attentions
from fmdconv.train import build_model, unwrap
from fmdconv.train.recipe import Recipe

ALL_KEPT = "all"
NONE_KEPT = "none"
# Initial kernel temperatures of the FMDConv authors' study (Figure 5).
AUTHORS_TEMPERATURES = (34, 40, 52, 61, 100)
# Methods whose kernel attention is a softmax divided by a temperature.

Value = int | float | str


@dataclass(frozen=True)
class Factor:
    """One thing an ablation varies.

    Attributes:
        name: the factor's name on the command line and in the results.
        label: axis and column label.
        setting: the recipe field it sets; ``None`` for ``attentions`` (switched on the model).
        defaults: the values tried when none are given, for a recipe (the attentions to keep depend
            on the model's method).
        parse: turns one value (given as text or as a value) into the value used, or raises
            ValueError.
        layer_option: the keyword of the convolution layers the setting reaches, where the factor
            is one: a method whose layer does not take it cannot be ablated on it.
    """

    name: str
    label: str
    setting: str | None
    defaults: Callable[[Recipe], tuple[Value, ...]]
    parse: Callable[[Any], Value]
    layer_option: str | None = None


def _temperature(value: Any) -> Value:
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"a temperature must be a finite number > 0; got {value!r}")
    return int(number) if number.is_integer() else number


def _kernel_num(value: Any) -> Value:
    number = int(value)
    if number < 1 or number != float(value):
        raise ValueError(f"kernel_num must be an int >= 1; got {value!r}")
    return number


def _schedule(value: Any) -> Value:
    if value not in KERNEL_MODES:
        raise ValueError(f"schedule must be one of {', '.join(KERNEL_MODES)}; got {value!r}")
    return str(value)


def _attentions(value: Any) -> Value:
    text = str(value)
    if text in (ALL_KEPT, NONE_KEPT):
        return text
    names = text.split("+")
    if any(name not in ATTENTION_NAMES for name in names) or len(set(names)) != len(names):
        raise ValueError(
            f"attentions must be '{ALL_KEPT}', '{NONE_KEPT}' or distinct names among "
            f"{', '.join(ATTENTION_NAMES)} joined by '+'; got {value!r}"
        )
    return "+".join(name for name in ATTENTION_NAMES if name in names)


def _attention_choices(recipe: Recipe) -> tuple[Value, ...]:
    """All attentions, each attention of the recipe's model alone, and none."""
    return (ALL_KEPT, *model_attentions(build_model(recipe)), NONE_KEPT)


FACTORS: dict[str, Factor] = {
    factor.name: factor
    for factor in (
        Factor(
            "temperature",
            "Initial kernel temperature",
            "kernel_temperature_start",
            lambda recipe: AUTHORS_TEMPERATURES,
            _temperature,
        ),
        Factor(
            "kernel_num",
            "Number of kernels n",
            "kernel_num",
            lambda recipe: (1, 2, 4, 8),
            _kernel_num,
            layer_option="kernel_num",
        ),
        Factor(
            "schedule",
            "Kernel temperature schedule",
            "kernel_temperature",
            lambda recipe: KERNEL_MODES,
            _schedule,
        ),
        Factor("attentions", "Attentions kept", None, _attention_choices, _attentions),
    )
}


def ablation_values(
    factor: str, recipe: Recipe, values: Sequence[Any] | None = None
) -> tuple[Factor, tuple[Value, ...]]:
    """The :class:`Factor` called ``factor`` and the values to try with ``recipe``.

    Args:
        factor: one of :data:`FACTORS`.
        recipe: the base recipe (its method decides which values make sense).
        values: values as text or values; ``None`` for the factor's defaults.

    Raises:
        ValueError: an unknown factor, a factor that changes nothing for ``recipe``'s model, a bad
            value (or an attention the model lacks), fewer than two values, or a repeated one.
    """
    if factor not in FACTORS:
        raise ValueError(f"factor must be one of {', '.join(FACTORS)}; got {factor!r}")
    spec = FACTORS[factor]
    _check_recipe(spec, recipe)
    if values is None:
        return spec, spec.defaults(recipe)
    parsed = []
    for value in values:
        try:
            parsed.append(spec.parse(value))
        except (TypeError, ValueError) as error:
            raise ValueError(f"values of {factor}: {error}") from None
    if len(parsed) < 2 or len(set(map(str, parsed))) != len(parsed):
        raise ValueError(f"values of {factor} must be at least two distinct values; got {list(values)}")
    if spec.name == "attentions":
        available = model_attentions(build_model(recipe))
        lacking = {name for kept in parsed for name in _kept_names(str(kept), available)} - set(available)
        if lacking:
            raise ValueError(
                f"values of attentions name {', '.join(sorted(lacking))}, which a {recipe.conv} model "
                f"lacks; it has {', '.join(available)}"
            )
    return spec, tuple(parsed)


def _check_recipe(factor: Factor, recipe: Recipe) -> None:
    """Raise a ValueError if varying ``factor`` would change nothing in a model of ``recipe``."""
    if recipe.conv == "static":
        raise ValueError(f"the {factor.name} ablation needs a dynamic conv (recipe conv is 'static')")
    layer = conv_type(recipe.conv)
    if factor.layer_option is not None and factor.layer_option not in inspect.signature(layer).parameters:
        raise ValueError(
            f"the {factor.name} ablation varies {factor.layer_option}, which a {recipe.conv} convolution "
            f"({layer.__name__}) does not have: every value would train the same model"
        )
    if factor.name in ("temperature", "schedule"):
        annealed = [name for name in conv_names() if "kernel" in conv_info(name).temperatures]
        if recipe.conv not in annealed:
            raise ValueError(
                f"the {factor.name} ablation needs a conv with a kernel temperature "
                f"({', '.join(annealed)}); got conv {recipe.conv!r}"
            )
        if recipe.kernel_num < 2:
            raise ValueError(
                f"the {factor.name} ablation needs kernel_num >= 2 (one kernel has no kernel attention)"
            )


def warn_if_annealed_at_once(factor: Factor, recipe: Recipe, iters_per_epoch: int) -> None:
    """Warn when a temperature ablation's values cannot differ: the ``degraded`` schedule anneals
    over ``temperature_warm_epochs`` x ``iters_per_epoch`` iterations, and over one or fewer the
    temperature is already 1 at the first step, whatever it started from."""
    iterations = recipe.temperature_warm_epochs * iters_per_epoch
    if factor.name == "temperature" and recipe.kernel_temperature == "degraded" and iterations <= 1:
        warnings.warn(
            f"the temperature schedule lasts {iterations:g} iterations (temperature_warm_epochs "
            f"{recipe.temperature_warm_epochs:g} x {iters_per_epoch} iterations per epoch), not more than "
            "one: the kernel temperature is 1 from the first step whatever its start, so every value "
            "trains the same model; raise --temperature-warm-epochs or --subset",
            UserWarning,
            stacklevel=2,
        )


def _kept_names(kept: str, available: Sequence[str]) -> tuple[str, ...]:
    """The attention names an ``attentions`` value keeps."""
    if kept == ALL_KEPT:
        return tuple(available)
    return () if kept == NONE_KEPT else tuple(kept.split("+"))


def keep_attentions(model: torch.nn.Module, kept: str) -> None:
    """Switch off every attention of ``model`` that ``kept`` (``all``, ``none`` or ``a+b``) leaves out."""
    names = _kept_names(kept, ATTENTION_NAMES)
    set_attentions(unwrap(model), **{name: name in names for name in ATTENTION_NAMES})
