"""Temperature schedules (docs/design.md, section 2) and the scheduler that drives the layers' buffers."""

from __future__ import annotations

import pytest
from torch import nn

from fmdconv import (
    CondConv2d,
    ConstantTemperature,
    DyConv2d,
    FMDConv2d,
    LinearTemperature,
    ODConv2d,
    StepTemperature,
    TemperatureScheduler,
    paper_schedules,
)


def test_linear_schedule_reaches_one_at_the_end_of_warm_up():
    schedule = LinearTemperature(iters_per_epoch=100, start=30.0, warm_epochs=10)
    assert schedule(0) == 30.0
    assert schedule(1) == pytest.approx(1 + 29 * 999 / 1000)
    assert schedule(500) == pytest.approx(15.5)
    assert schedule(1000) == 1.0
    assert schedule(5000) == 1.0


def test_step_schedule_lowers_by_three_each_epoch():
    schedule = StepTemperature(iters_per_epoch=10, start=34.0)
    first_iterations = [1 + 10 * epoch for epoch in range(13)]
    assert [schedule(t) for t in first_iterations] == [34, 31, 28, 25, 22, 19, 16, 13, 10, 7, 4, 1, 1]
    assert schedule(10) == 34 and schedule(11) == 31


def test_constant_schedule_and_validation():
    assert ConstantTemperature(34.0)(12345) == 34.0
    with pytest.raises(ValueError, match="value must be > 0"):
        ConstantTemperature(0.0)
    with pytest.raises(ValueError, match="iters_per_epoch must be > 0"):
        LinearTemperature(iters_per_epoch=0)


@pytest.mark.parametrize(
    ("layer", "mode", "gate_at", "kernel_at"),
    [
        (FMDConv2d(4, 4, 3), "degraded", {0: 30.0, 50: 15.5, 100: 1.0}, {0: 34.0, 50: 17.5, 100: 1.0}),
        (FMDConv2d(4, 4, 3), "constant", {0: 30.0, 100: 1.0}, {0: 34.0, 100: 34.0, 10_000: 34.0}),
        (ODConv2d(4, 4, 3), "degraded", {0: 30.0, 100: 1.0}, {0: 30.0, 50: 15.5, 100: 1.0}),
        (DyConv2d(4, 4, 3), "degraded", None, {0: 30.0, 100: 1.0}),
        (DyConv2d(4, 4, 3), "step", None, {1: 30.0, 11: 27.0}),
        (CondConv2d(4, 4, 3), "degraded", None, None),
    ],
)
def test_paper_schedules_per_method(layer, mode, gate_at, kernel_at):
    gate, kernel = paper_schedules(layer, iters_per_epoch=10, kernel_mode=mode)
    for schedule, expected in ((gate, gate_at), (kernel, kernel_at)):
        if expected is None:
            assert schedule is None
        else:
            assert {t: schedule(t) for t in expected} == pytest.approx(expected)


def test_scheduler_writes_the_values_into_every_layer_each_iteration():
    model = nn.Sequential(FMDConv2d(4, 8, 3), FMDConv2d(8, 8, 3), nn.ReLU())
    scheduler = TemperatureScheduler.for_paper(model, iters_per_epoch=5, warm_epochs=2)
    assert model[0].gate_temperature.item() == 30.0 and model[1].kernel_temperature.item() == 34.0
    for _ in range(5):
        values = scheduler.step()
    assert values == pytest.approx({"gate": 15.5, "kernel": 17.5})
    assert model[1].gate_temperature.item() == pytest.approx(15.5)
    assert model[0].kernel_temperature.item() == pytest.approx(17.5)
    resumed = TemperatureScheduler.for_paper(model, iters_per_epoch=5, warm_epochs=2)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.iteration == 5 and model[0].kernel_temperature.item() == pytest.approx(17.5)


def test_mixed_methods_need_an_explicit_start():
    model = nn.Sequential(FMDConv2d(4, 4, 3), ODConv2d(4, 4, 3))
    with pytest.raises(ValueError, match="pass kernel_start"):
        paper_schedules(model, iters_per_epoch=10)
    _, kernel = paper_schedules(model, iters_per_epoch=10, kernel_start=40.0)
    assert kernel(0) == 40.0
    with pytest.raises(ValueError, match="kernel_mode must be one of"):
        paper_schedules(model, iters_per_epoch=10, kernel_mode="cosine")


def test_a_start_below_the_end_is_honoured_not_replaced_by_the_end() -> None:
    schedule = LinearTemperature(10, start=0.5, warm_epochs=1)
    assert [schedule(t) for t in (0, 5, 10, 20)] == [0.5, 0.75, 1.0, 1.0]
