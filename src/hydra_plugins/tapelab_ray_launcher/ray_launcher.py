"""The launcher of conf/hydra/launcher/ray.yaml: hydra-ray-launcher's, with settings for its private cluster.

Hydra imports this module at plugin discovery in every environment, so hydra-ray-launcher (the `ray` extra,
installed in an environment of its own) is imported only when the launcher is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from tapelab.environ import restored_environ

# A private loopback cluster needs no usage reports and no token file in ~/.ray.
PRIVATE_CLUSTER_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@contextmanager
def environment_defaults(defaults: Mapping[str, str]) -> Iterator[None]:
    """Set the variables of `defaults` that the environment lacks; on exit, put back what the environment held.

    Back, not only removed: ray.init sets RAY_USAGE_STATS_ENABLED=0 itself when it starts a cluster.
    """
    with restored_environ(*defaults):
        for name, value in defaults.items():
            os.environ.setdefault(name, value)
        yield


class PrivateClusterRayLauncher(Launcher):
    """hydra-ray-launcher's RayLauncher, whose own local cluster (`init.address` null) sends no usage reports
    and uses no auth token.

    A value already in the environment wins, and an address leaves the environment alone. Ray reads these
    variables when ray.init starts the cluster, whose processes keep them; the cluster outlives launch() (Ray
    shuts it down when this process exits), but later launches only reuse it, so this process's own
    environment is restored as soon as launch() returns.
    """

    def __init__(self, ray: DictConfig) -> None:
        from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher

        self.ray_launcher = RayLauncher(ray)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.ray_launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        private = self.ray_launcher.ray_cfg.init.get("address") is None
        with environment_defaults(PRIVATE_CLUSTER_ENVIRONMENT) if private else nullcontext():
            return self.ray_launcher.launch(job_overrides, initial_job_idx)
