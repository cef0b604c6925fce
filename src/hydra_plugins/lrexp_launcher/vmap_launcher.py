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
from omegaconf import DictConfig, OmegaConf, open_dict

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
    hands that config to the launcher rather than composing the job a second time.
    """

    def __init__(self, loader) -> None:
        self._loader = loader
        self._composed: dict[tuple, DictConfig] = {}
        self._checked: dict[tuple, DictConfig] = {}  # composed for the sweeper's check
        self._hydra_parsed: tuple | None = None  # (master config, its Hydra overrides parsed)

    def for_launch(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The job's config, for the launcher (which may change it)."""
        key = (id(master_config), tuple(sweep_overrides))
        if key not in self._checked:
            self.load_sweep_config(master_config, sweep_overrides)
        return self._checked.pop(key)

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
        cfg = self._compose(master_config, list(sweep_overrides), parsed, plain, parser)
        self._checked[(id(master_config), tuple(sweep_overrides))] = cfg
        return cfg

    def _hydra_overrides(self, master_config: DictConfig, parser) -> list:
        """The master config's Hydra overrides, parsed (once per master config)."""
        if self._hydra_parsed is None or self._hydra_parsed[0] is not master_config:
            lines = OmegaConf.to_container(master_config.hydra.overrides.hydra)
            self._hydra_parsed = (master_config, parser.parse_overrides(lines))
        return self._hydra_parsed[1]

    def _compose(self, master_config, sweep_overrides, parsed, plain, parser) -> DictConfig:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

        shape = tuple(
            ("=", o.key_or_group) if p else o.input_line for o, p in zip(parsed, plain, strict=True)
        )
        earlier = self._composed.get(shape)
        if earlier is None:
            cfg = self._loader.load_sweep_config(master_config, list(sweep_overrides))
            self._composed[shape] = copy.deepcopy(cfg)
            return cfg
        cfg = copy.deepcopy(earlier)
        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o, p in zip(parsed, plain, strict=True) if p], cfg
        )
        every = [*self._hydra_overrides(master_config, parser), *parsed]
        task = [o for o in every if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=task,
            kv_sep=dirname.kv_sep,
            item_sep=dirname.item_sep,
            exclude_keys=dirname.exclude_keys,
        )
        return cfg


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
            sweep_config = self.hydra_context.config_loader.for_launch(self.config, list(overrides))
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
