"""``hydra/launcher=vmap``: train a multirun's jobs as batched JAX programs, in this process.

Jobs that differ only in float hyperparameters (``optimizer.lr``, ``optimizer.momentum``, …) or in
``train.seed`` train as one ``vmap``-ed program; each is still checked, and logged as its own child
run with its own curves. The work itself is in :mod:`lrexp.sweeps.batched`; this is Hydra's
interface.
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


class SweepConfigs:
    """Hydra's config loader, made fast for sweeps over values.

    Hydra composes every job's config twice (the sweeper checks it, the launcher uses it), each
    time from the YAML files up: about 70 ms a job, 9 s for 64 jobs. Here a job whose overrides
    differ from an earlier job's only in the values of plain keys (``optimizer.lr=0.01``; not
    config groups, ``+``/``~`` or Hydra's own keys) starts from that job's composed config and
    gets its values set the way Hydra sets them; any other job is composed by Hydra. Everything
    else is passed through to Hydra's loader.

    The sweeper composes each job only to check it, and drops the config: :meth:`for_launch`
    hands that config to the launcher rather than composing the job a second time. A job built
    from an earlier one is its task config alone (no ``hydra`` node: the launcher would drop it,
    and copying it costs as much as the rest); the launcher reports it with the earlier job's
    Hydra config (:meth:`hydra_of`).
    """

    def __init__(self, loader) -> None:
        self._loader = loader
        self._composed: dict[tuple, tuple[DictConfig, DictConfig]] = {}  # (full, task) by shape
        self._checked: dict[tuple, DictConfig] = {}  # composed for the sweeper's check
        self._hydra_of: dict[tuple, DictConfig] = {}  # a task-only job's earlier full config
        self._hydra_parsed: tuple | None = None  # (master config, its Hydra overrides parsed)

    def for_launch(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> tuple[DictConfig, DictConfig]:
        """The job's config without its ``hydra`` node (for the launcher, which may change it),
        and a config whose ``hydra`` node reports the job (its own, or an earlier job's)."""
        key = (id(master_config), tuple(sweep_overrides))
        if key not in self._checked:
            self.load_sweep_config(master_config, sweep_overrides)
        cfg, earlier = self._checked.pop(key), self._hydra_of.pop(key, None)
        if earlier is not None:  # task-only already
            return cfg, earlier
        task = copy.deepcopy(cfg)
        with open_dict(task):
            del task["hydra"]
        return task, cfg

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def _plain(self, o) -> bool:
        from hydra.core.override_parser.types import OverrideType

        return (
            o.type == OverrideType.CHANGE
            and o.package is None
            and not o.is_sweep_override()
            and not o.is_hydra_override()
            and not self._loader.repository.group_exists(o.key_or_group.replace(".", "/"))
        )

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        parsed = parser.parse_overrides(list(sweep_overrides))
        plain = [self._plain(o) for o in parsed]
        key = (id(master_config), tuple(sweep_overrides))
        cfg, earlier = self._compose(master_config, list(sweep_overrides), parsed, plain)
        self._checked[key] = cfg
        if earlier is not None:
            self._hydra_of[key] = earlier
        return cfg

    def _compose(
        self, master_config, sweep_overrides, parsed, plain
    ) -> tuple[DictConfig, DictConfig | None]:
        """The job's full config (Hydra's), or its task config built from an earlier job of the
        same shape with that job's full config (whose ``hydra`` node then reports it)."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        shape = tuple(
            ("=", o.key_or_group) if p else o.input_line for o, p in zip(parsed, plain, strict=True)
        )
        earlier = self._composed.get(shape)
        if earlier is None:
            cfg = self._loader.load_sweep_config(master_config, list(sweep_overrides))
            task = copy.deepcopy(cfg)
            with open_dict(task):
                del task["hydra"]
            self._composed[shape] = (copy.deepcopy(cfg), task)
            return cfg, None
        full, task = earlier
        cfg = copy.deepcopy(task)
        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o, p in zip(parsed, plain, strict=True) if p], cfg
        )
        return cfg, full


class VmapLauncher(Launcher):
    def __init__(self, max_batch: int = 256) -> None:
        self.max_batch = max_batch
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context  # the task is lrexp's own
        if not isinstance(hydra_context.config_loader, SweepConfigs):
            # The sweeper holds this same context: its checks of the jobs' configs get faster too.
            hydra_context.config_loader = SweepConfigs(hydra_context.config_loader)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from lrexp import quiet_libraries
        from lrexp.sweeps import batched

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        quiet_libraries()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs, batched", len(job_overrides))
        jobs, configs = [], []
        for idx, overrides in enumerate(job_overrides):
            num = initial_job_idx + idx
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            loader = self.hydra_context.config_loader
            task_cfg, sweep_config = loader.for_launch(self.config, list(overrides))
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
