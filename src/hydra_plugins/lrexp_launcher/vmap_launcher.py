"""``hydra/launcher=vmap``: train a multirun's jobs as batched JAX programs, in this process.

Jobs that differ only in float hyperparameters (``optimizer.lr``, ``optimizer.momentum``, …) or in
``train.seed`` train as one ``vmap``-ed program; each is still checked, and logged as its own child
run with its own curves. The work itself is in :mod:`lrexp.batched`; this is Hydra's interface.
"""

# No `from __future__ import annotations`: Hydra runs plugin modules without registering them in
# sys.modules, and dataclasses then cannot resolve string annotations.
import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class VmapLauncherConf:
    _target_: str = "hydra_plugins.lrexp_launcher.vmap_launcher.VmapLauncher"
    max_batch: int = 256  # most jobs trained as one program


ConfigStore.instance().store(
    group="hydra/launcher", name="vmap", node=VmapLauncherConf, provider="lrexp"
)


class VmapLauncher(Launcher):
    def __init__(self, max_batch: int = 256) -> None:
        self.max_batch = max_batch
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context  # the task is lrexp's own

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from lrexp import batched, train

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        train.quiet_libraries()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs as batched programs", len(job_overrides))
        jobs, configs = [], []
        for idx, overrides in enumerate(job_overrides):
            num = initial_job_idx + idx
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = num
                sweep_config.hydra.job.num = num
            task_cfg = copy.deepcopy(sweep_config)
            with open_dict(task_cfg):
                del task_cfg["hydra"]
            jobs.append(batched.Job(num, list(overrides), task_cfg))
            configs.append(sweep_config)
        objectives = batched.run_jobs(jobs, base_dir=os.getcwd(), max_batch=self.max_batch)
        return [
            JobReturn(
                overrides=job.overrides,
                cfg=job.cfg,
                hydra_cfg=cfg,
                working_dir=os.getcwd(),
                task_name=cfg.hydra.job.name,
                status=JobStatus.COMPLETED,
                _return_value=objectives[job.num],
            )
            for job, cfg in zip(jobs, configs, strict=True)
        ]
