import pytest

from fmdconv.utils.timing import synchronize, time_call, time_interleaved


def test_time_interleaved_runs_warmup_then_rounds_each_starting_one_later():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = time_interleaved(runs, 4, warmup=1)
    # warm-up in order, then rounds starting at a, b, c, a: no candidate always runs first
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab" + "abc"
    assert list(times) == ["a", "b", "c"] and all(len(t) == 4 and min(t) >= 0 for t in times.values())


def test_time_call_uses_the_given_clock():
    ticks = iter([1.0, 3.5])
    assert time_call(lambda: None, "cpu", clock=lambda: next(ticks)) == 2.5


@pytest.mark.parametrize(("argument", "value"), [("repeats", 0), ("warmup", -1)])
def test_time_interleaved_refuses_bad_counts(argument, value):
    options = {"repeats": 1, "warmup": 0, argument: value}
    with pytest.raises(ValueError, match=argument):
        time_interleaved({"a": lambda: None}, **options)


def test_synchronize_accepts_cpu_and_none():
    synchronize("cpu")
    synchronize(None)


def test_before_round_runs_ahead_of_each_timed_round():
    calls = []
    time_interleaved(
        {"a": lambda: calls.append("a")}, 2, warmup=1, before_round=lambda r: calls.append(f"round {r}")
    )
    assert calls == ["a", "round 0", "a", "round 1", "a"]


def test_cuda_events_are_ignored_off_cuda():
    ticks = iter([0.0, 0.25])
    assert time_call(lambda: None, "cpu", clock=lambda: next(ticks), cuda_events=True) == 0.25
