"""Speed-accuracy scores and top-k accuracy, checked against hand-computed values."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fmdconv.metrics import ies, rcs, top_k_accuracy


def test_ies_hand_values() -> None:
    # 12 s per epoch at 80 % correct: 12 / 0.8 = 15 s per unit of correct work.
    assert ies(12.0, 0.8) == pytest.approx(15.0)
    assert isinstance(ies(12.0, 0.8), float)


def test_rcs_hand_values() -> None:
    # 4 ms per image at 90 % correct: 0.9 / 0.004 = 225 correct images per second.
    assert rcs(0.004, 0.9) == pytest.approx(225.0)
    # Same as number correct / total time: 900 correct out of 1000 images, 4 s in total.
    assert rcs(4.0 / 1000, 900 / 1000) == pytest.approx(900 / 4.0)


def test_scores_are_vectorised_and_broadcast() -> None:
    times = [10.0, 20.0, 40.0]
    accuracies = np.array([0.5, 0.8, 1.0])
    np.testing.assert_allclose(ies(times, accuracies), [20.0, 25.0, 40.0])
    np.testing.assert_allclose(rcs(times, accuracies), [0.05, 0.04, 0.025])
    np.testing.assert_allclose(ies(torch.tensor([2.0, 4.0]), 0.5), [4.0, 8.0])
    assert isinstance(rcs(times, 0.5), np.ndarray)


@given(
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
    st.floats(min_value=1e-6, max_value=1.0, allow_nan=False),
)
def test_rcs_is_the_reciprocal_of_ies(time: float, accuracy: float) -> None:
    assert rcs(time, accuracy) * ies(time, accuracy) == pytest.approx(1.0)


def test_zero_accuracy_gives_infinite_ies_and_zero_rcs() -> None:
    assert ies(5.0, 0.0) == math.inf
    assert rcs(5.0, 0.0) == 0.0


@pytest.mark.parametrize("score", [ies, rcs])
@pytest.mark.parametrize("accuracy", [73.1, -0.1, [0.5, 1.2], math.nan])
def test_accuracy_must_be_a_proportion(score, accuracy) -> None:
    with pytest.raises(ValueError, match=r"accuracy must be a proportion.*pass 0\.731, not 73\.1"):
        score(1.0, accuracy)


@pytest.mark.parametrize("score", [ies, rcs])
@pytest.mark.parametrize("time", [0.0, -1.0, math.inf, math.nan, [1.0, 0.0]])
def test_time_must_be_positive_and_finite(score, time) -> None:
    with pytest.raises(ValueError, match="time must be finite and > 0"):
        score(time, 0.5)


@pytest.mark.parametrize(
    ("time", "accuracy", "name"), [("fast", 0.5, "time"), (1.0, ["high", 0.5], "accuracy")]
)
def test_non_numeric_input_names_the_argument(time, accuracy, name) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a number"):
        ies(time, accuracy)


def test_top_k_accuracy_hand_values() -> None:
    logits = torch.tensor(
        [
            [0.1, 0.5, 0.2, 0.9, 0.0, 0.3],  # order: 3, 1, 5, 2, 0, 4
            [0.8, 0.1, 0.05, 0.02, 0.01, 0.02],  # order: 0, 1, 2, ...
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # order: 5, 4, 3, 2, 1, 0
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # order: 0, 1, 2, 3, 4, 5
        ]
    )
    targets = torch.tensor([3, 1, 1, 5])  # ranks 1, 2, 5, 6
    assert top_k_accuracy(logits, targets, ks=(1, 2, 5)) == {1: 0.25, 2: 0.5, 5: 0.75}


def test_top_k_larger_than_classes_is_clamped() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    targets = torch.tensor([0, 0])
    assert top_k_accuracy(logits, targets) == {1: 0.5, 5: 1.0}


@pytest.mark.parametrize(
    ("logits", "targets", "ks", "message"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), (1,), "logits must have shape"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), (1,), "logits must have shape"),
        (torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), (1,), "targets must be an integer"),
        (torch.zeros(2, 3), torch.zeros(2), (1,), "targets must be an integer"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), (1,), r"targets must be class indices in \[0, 3\)"),
        (torch.zeros(2, 3), torch.tensor([0, 1]), (0,), "ks must be"),
        (torch.zeros(2, 3), torch.tensor([0, 1]), (), "ks must be"),
        (torch.zeros(2, 3), torch.tensor([0, 1]), (1.5,), "ks must be"),
    ],
)
def test_top_k_rejects_bad_input(logits, targets, ks, message) -> None:
    with pytest.raises(ValueError, match=message):
        top_k_accuracy(logits, targets, ks=ks)
