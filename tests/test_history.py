"""maskaudit.history: per-epoch records of the samples drawn, their dense tables and checkpoint form."""

from __future__ import annotations

import numpy as np
import torch

from maskaudit.history import TrainingHistory


def epoch_values(rows: np.ndarray, rng: np.random.Generator, classes: int = 2) -> dict[str, np.ndarray]:
    size = len(rows)
    return {"loss": rng.random(size), "t": rng.normal(size=size), "weight": rng.random(size) + 0.5,
            "dice": rng.random((size, classes))}


def test_dense_tables_put_each_value_at_its_sample_and_nan_elsewhere():
    rng = np.random.default_rng(0)
    history = TrainingHistory(num_samples=10, num_classes=2)
    first, second = np.array([7, 2, 5]), np.array([0, 9])
    values = [epoch_values(first, rng), epoch_values(second, rng)]
    history.record(first, values[0])
    history.record(second, values[1])
    loss, dice = history.dense("loss"), history.dense("dice")
    assert loss.shape == (2, 10) and dice.shape == (2, 10, 2) and loss.dtype == np.float32
    np.testing.assert_allclose(loss[0, first], values[0]["loss"].astype(np.float32))
    np.testing.assert_allclose(dice[1, second], values[1]["dice"].astype(np.float32))
    assert np.isnan(np.delete(loss[0], first)).all() and np.isnan(np.delete(dice[1], second, axis=0)).all()
    np.testing.assert_array_equal(history.dense("t", first=1), history.dense("t")[1:])
    history.truncate(1)
    assert len(history) == 1 and history.dense("weight").shape == (1, 10)


def test_a_sampled_epoch_holds_its_drawn_rows_only():
    rng = np.random.default_rng(1)
    history = TrainingHistory(num_samples=100_000, num_classes=3)
    for _ in range(5):
        history.record(rng.choice(100_000, 64, replace=False), epoch_values(np.arange(64), rng, classes=3))
    held = sum(rows.nbytes + sum(value.nbytes for value in values.values()) for rows, values in history.records)
    assert held == 5 * 64 * (8 + 4 * 3 + 4 * 3)  # rows int64, three scalars and three Dice in float32


def test_the_checkpoint_form_is_tensors_and_rebuilds_the_same_history():
    rng = np.random.default_rng(2)
    history = TrainingHistory(num_samples=6, num_classes=2)
    for rows in (np.array([4, 1]), np.arange(6)):
        history.record(rows, epoch_values(rows, rng))
    state = history.state()
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    rebuilt = TrainingHistory.from_state(state)
    assert (rebuilt.num_samples, rebuilt.num_classes, len(rebuilt)) == (6, 2, 2)
    for key in ("loss", "t", "weight", "dice"):
        np.testing.assert_array_equal(rebuilt.dense(key), history.dense(key))
    empty = TrainingHistory.from_state(TrainingHistory(6, 2).state())
    assert len(empty) == 0 and empty.dense("dice").shape == (0, 6, 2)
