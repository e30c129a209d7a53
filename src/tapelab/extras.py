"""The Hydra plugins that come with tapelab's optional extras: which option needs which extra, and whether it is
installed here."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class Extra:
    """An optional extra of tapelab (pyproject.toml) that brings a Hydra plugin."""

    name: str
    plugin: str  # the plugin's distribution; its package is hydra_plugins.<plugin, with _ for ->
    install: str = ""  # the command that installs it, where it isn't `pip install -e ".[<name>]"`

    def installed(self) -> bool:
        return importlib.util.find_spec(f"hydra_plugins.{self.plugin.replace('-', '_')}") is not None

    def command(self) -> str:
        return self.install or f'pip install -e ".[{self.name}]"'


PARALLEL = Extra("parallel", "hydra-joblib-launcher")
SLURM = Extra("slurm", "hydra-submitit-launcher")
OPTUNA = Extra("optuna", "hydra-optuna-sweeper")
RAY = Extra(
    "ray",
    "hydra-ray-launcher",
    'python3 -m venv .venv-ray && .venv-ray/bin/pip install -e ".[ray]" (an environment of its own, see README: '
    "Launchers)",
)

# The launchers and sweepers that need an extra, by config group and option.
PLUGIN_OPTIONS = {
    ("hydra/launcher", "joblib"): PARALLEL,
    ("hydra/launcher", "submitit_local"): SLURM,
    ("hydra/launcher", "submitit_slurm"): SLURM,
    ("hydra/launcher", "ray"): RAY,
    ("hydra/sweeper", "optuna"): OPTUNA,
}
# tapelab's own options that choose one of them (conf/hparams_search/optuna.yaml chooses hydra/sweeper=optuna).
TAPELAB_OPTIONS = {("hparams_search", "optuna"): OPTUNA}


def missing_extra(group: str, option: str) -> str | None:
    """What `group=option` needs, if it needs an extra that isn't installed here (`needs the … extra (…), which
    is not installed here: <command>`); else None."""
    extra = PLUGIN_OPTIONS.get((group, option)) or TAPELAB_OPTIONS.get((group, option))
    if extra is None or extra.installed():
        return None
    return f"needs the {extra.name} extra ({extra.plugin}), which is not installed here: {extra.command()}"


def missing_in_launch(config: DictConfig) -> tuple[str, str] | None:
    """The launcher or sweeper of a launch's `config` that needs an extra that isn't installed here, as (group,
    what is missing); None if every one is installed."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default={})
    for group in ("hydra/launcher", "hydra/sweeper"):
        option = str(choices.get(group))
        missing = missing_extra(group, option)
        if missing is not None:
            return group, f"{option} {missing}"
    return None


def options_not_installed() -> str:
    """For --help: a line for each of tapelab's own options that can't run here for want of an extra, with the
    command that installs it; nothing where every extra is installed."""
    lines = []
    for group, option in TAPELAB_OPTIONS:
        missing = missing_extra(group, option)
        if missing is not None:
            lines.append(f"{group}={option} {missing}\n")
    return "".join(lines)
