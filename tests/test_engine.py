"""The engine used directly, without Hydra: members of any dtype, trained in chunks, from the process's pool."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import compose_config
from tapelab.config import StopConfig, to_experiment
from tapelab.engine.pool import POOL, LoopPool
from tapelab.runs import checked_problem


def trained(dtype: str, *overrides: str, epochs: int, members: int = 1, pool: LoopPool = POOL):
    """`members` copies of the composed run's problem trained by a batch of `dtype` from `pool`: each member's
    history, and the batch."""
    experiment = to_experiment(compose_config("log.plots=false", *overrides))
    problem, _ = checked_problem(experiment)
    each = lambda value: [value] * members  # noqa: E731
    with pool.batch_for(each(problem), each(experiment.optimizer), each(experiment.lr), 1, each(StopConfig()),
                        jit_compile=True, dtype=dtype) as batch:  # fmt: skip
        reports = list(batch.chunks(epochs))
    histories = [pd.concat([chunk.history for call in reports for chunk in call[member]]) for member in range(members)]
    return histories, batch


@pytest.mark.parametrize("members", [1, 3])
def test_a_float64_batch_follows_gradient_descent_s_closed_form_to_float64_precision(members):
    # f = x² − 2x + 1 from 0 at lr 0.01: x_t = 1 − 0.98^t. float32 can't get closer than ~1e-7 to it.
    steps = np.arange(301)
    exact = 1 - 0.98**steps
    for dtype, tolerance in (("float64", 1e-13), ("float32", 1e-6)):
        histories, batch = trained(dtype, "optimizer=gd", "lr=0.01", epochs=300, members=members)
        assert all(variable.dtype == dtype for variable in batch.layout.params.values())
        for history in histories:
            assert history["step"].tolist() == steps.tolist()
            error = np.abs(history["x"].to_numpy(np.float64) - exact).max()
            assert error < tolerance and (dtype == "float32") == (error > 1e-12)


def test_a_float64_adam_keeps_its_slots_and_learning_rate_in_float64_each_slot_known_by_its_parameter():
    _, batch = trained(
        "float64", "objective=neuron", "objective.trainable=[w,x]", "optimizer=adam", "lr=0.001", epochs=5, members=2
    )
    params = list(batch.layout.params)
    slots = batch.update.state()
    assert len(params) >= 2 and batch.update.lr.dtype == "float64"
    owners = batch.update.slot_parameters()
    assert owners.count(None) == 1 and sorted(owner for owner in owners if owner is not None) == sorted(
        list(range(len(params))) * 2
    )  # the iteration count, and a momentum and a velocity per parameter
    for slot, owner in zip(slots, owners, strict=True):
        if owner is None:
            assert slot.dtype == "int64"
        else:  # Keras names a slot after its parameter: `w_momentum`
            assert slot.dtype == "float64" and slot.name.startswith(f"{params[owner]}_")


def test_the_pool_keeps_a_loop_per_dtype_and_reset_empties_it():
    pool = LoopPool()
    for dtype in ("float32", "float64", "float32"):
        trained(dtype, "optimizer=sgd", epochs=3, pool=pool)
    assert sorted(batch.dtype for batch in pool.idle()) == ["float32", "float64"]  # the second float32 run reused
    pool.reset()
    assert pool.idle() == []
