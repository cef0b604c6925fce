"""``hydra/launcher=slurm``: Hydra's submitit SLURM launcher, waiting on the job array as a whole
(see :mod:`lrexp.sweeps.slurm`): a cancelled or lost job ends the sweep, not a wait forever.
"""

# No `from __future__ import annotations`: Hydra runs plugin modules without registering them in
# sys.modules, and dataclasses then cannot resolve string annotations.
import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

# Logged as submitit's launcher logs: lrexp keeps its "#3 : ..." lines off the console.
log = logging.getLogger(submitit_launcher.__name__)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """submitit's SLURM launcher: the same submission, lrexp's wait (lrexp.sweeps.slurm)."""

    def __call__(self, *args, **kwargs) -> JobReturn:
        """Run one job, inside its SLURM job (see lrexp.sweeps.slurm.in_job)."""
        from lrexp.sweeps import slurm

        slurm.in_job()
        return super().__call__(*args, **kwargs)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit

        from lrexp.sweeps import slurm

        assert self.config is not None
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params.get("max_num_timeout", 0),
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        options = {k: v for k, v in self.params.items() if k not in init_keys}
        executor.update_parameters(
            **{k if k in base else f"slurm_{k}": v for k, v in options.items()}
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:  # as submitit's launcher does
            sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))
        params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            state = Singleton.get_state()
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        jobs = executor.map_array(self, *zip(*params, strict=True))
        return slurm.results(jobs, [list(o) for o in job_overrides])
