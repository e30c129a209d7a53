"""The grid sweeper's job configs are the configs Hydra composes for those jobs, however it came to them."""

from __future__ import annotations

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import CONF_DIR
from hydra_plugins.tapelab_sweeper.grid_sweeper import ComposedOnce


class CountingLoader(ConfigLoaderImpl):
    """Hydra's own config loader, counting the job configs it composes."""

    compositions = 0

    def load_sweep_config(self, master_config, sweep_overrides):
        self.compositions += 1
        return super().load_sweep_config(master_config, sweep_overrides)


def sweep(*arguments: str) -> tuple[CountingLoader, object, list[list[str]]]:
    """Hydra's loader, the master config of `python run.py -m <arguments>`, and its jobs' overrides."""
    loader = CountingLoader(config_search_path=create_config_search_path(str(CONF_DIR)))
    master = loader.load_configuration("config", overrides=list(arguments), run_mode=RunMode.MULTIRUN)
    task = OverridesParser.create().parse_overrides(list(master.hydra.overrides.task))
    (jobs,) = BasicSweeper.split_arguments(task, max_batch_size=None)
    return loader, master, jobs


@pytest.mark.parametrize(
    ("arguments", "compositions"),
    [
        # optimizer is a config group: each of its values is composed, every learning rate and length derived
        (["optimizer=sgd,adam", "lr=0.1,0.01,0.001", "epochs=5,7"], 2),
        # values of other types, nested keys, an interpolation, null, and a constant addition
        (["log.plots=true,false", "stop.patience=null,3", "seed=0,${epochs}", "+extra=1", "objective=rosenbrock"], 1),
        # additions, lists and dicts are composed by Hydra for every job
        (["+extra=1,2", "lr=0.1,0.2"], 2),
        # a constant deletion is the same in every job
        (["+extra=1", "~extra", "lr=0.1,0.2"], 1),
        (["objective=rosenbrock", "objective.init=[0.0,1.0],[1.0,0.0]"], 2),
        (["objective=expression", "objective.init={w:1.0},{w:2.0}"], 2),
        # a group's choice comes before every value, so a key below it is derived
        (["objective=rosenbrock", "objective.a=1,2", "optimizer=adam", "optimizer.beta_1=0.8,0.9"], 1),
        # another override of the swept key: Hydra composes every job
        (["lr=0.01,0.1", "++lr=0.05"], 2),
        # a Hydra setting on the command line
        (["+hydra.job.env_set.K=a", "hydra.job.chdir=false", "lr=0.1,0.2"], 1),
    ],
)
def test_each_job_config_is_the_one_hydra_composes(arguments, compositions):
    loader, master, jobs = sweep(*arguments)
    composed = ComposedOnce(loader)
    for overrides in jobs:
        composed.keep(master, overrides)
    assert loader.compositions == compositions
    for overrides in jobs:
        kept = composed.load_sweep_config(master, overrides)
        own = loader.load_sweep_config(master, overrides)
        assert OmegaConf.to_yaml(kept) == OmegaConf.to_yaml(own), overrides
        assert kept.hydra.job.override_dirname == own.hydra.job.override_dirname != ""


def test_a_bad_value_in_a_derived_job_fails_as_hydra_fails_it():
    loader, master, jobs = sweep("epochs=5,abc")
    composed = ComposedOnce(loader)
    composed.keep(master, jobs[0])
    with pytest.raises(ConfigCompositionException) as hydra_error:
        loader.load_sweep_config(master, jobs[1])
    with pytest.raises(ConfigCompositionException) as derived_error:
        composed.keep(master, jobs[1])
    assert str(derived_error.value) == str(hydra_error.value) == "Error merging override epochs=abc"
    assert str(derived_error.value.__cause__) == str(hydra_error.value.__cause__)


# Sweeps whose jobs have another override of a swept key, or of its parent or a child, besides the swept one.
# Hydra applies a job's overrides in order; some of these it refuses (a group without the key, a deletion from a
# structured config), and some it collapses (one value per key: the last one given).
OTHER_OVERRIDES_OF_THE_SWEPT_KEY = [
    ["lr=0.01,0.1", "++lr=0.05"],
    ["seed=1,2", "~seed"],
    ["objective=rosenbrock", "objective.a=1,2", "objective={a:3,b:100}"],
    ["objective=rosenbrock", "objective.a=1,2", "~objective.a"],
    ["stop.grad_tol=0.1,0.2", "stop.grad_tol=null"],
    ["lr=0.01,0.1", "lr=0.2,0.3"],
    ["objective.a=1,2", "objective=himmelblau"],
    ["stop.grad_tol=0.1,0.2", "stop={grad_tol:0.5}"],
]


@pytest.mark.parametrize("arguments", OTHER_OVERRIDES_OF_THE_SWEPT_KEY, ids=" ".join)
def test_each_job_config_is_hydra_s_when_other_overrides_edit_the_swept_key(arguments):
    try:
        loader, master, jobs = sweep(*arguments, "epochs=5")
    except ConfigCompositionException:  # Hydra refuses the sweep's own config, before any sweeper runs
        assert arguments == ["objective=rosenbrock", "objective.a=1,2", "~objective.a"]
        return
    composed = ComposedOnce(loader)
    for overrides in jobs:
        try:
            own = loader.load_sweep_config(master, overrides)
        except ConfigCompositionException as hydra_error:
            with pytest.raises(ConfigCompositionException) as derived_error:
                composed.keep(master, overrides)
            assert str(derived_error.value) == str(hydra_error), overrides
            assert str(derived_error.value.__cause__) == str(hydra_error.__cause__), overrides
            continue
        composed.keep(master, overrides)  # a job that Hydra composes is never refused
        kept = composed.load_sweep_config(master, overrides)
        assert OmegaConf.to_yaml(kept) == OmegaConf.to_yaml(own), overrides
