"""``hydra/sweeper=lrexp_optuna``: a Hydra sweeper on Optuna's ask/tell API, one trial at a time.

For each trial it asks Optuna for a point of the search space (see ``_space.py``), turns it into
overrides, launches them as one job through the configured launcher, and tells Optuna the job's
return value, the objective (NaN or a failed job: a FAIL trial, and the search goes on). Jobs run
through the launcher as in any multirun, so the Hydra callbacks see them as usual: with lrexp's
sweep callback each trial is a child MLflow run of the sweep's parent run. Trial ``n`` is job ``n``.

At the end it logs the best trial and writes ``optimization_results.yaml`` to the sweep directory.
"""

# No `from __future__ import annotations` here: Hydra's plugin scan runs this module before it is
# in sys.modules, where dataclasses look up string annotations.
import logging
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)


class Direction(Enum):
    minimize = 1
    maximize = 2


@dataclass
class LrexpOptunaSweeperConf:
    _target_: str = "hydra_plugins.lrexp_optuna.optuna_sweeper.LrexpOptunaSweeper"
    n_trials: int = 20  # jobs to run, one after another
    direction: Direction = Direction.minimize  # what to do with the task function's return value
    seed: int | None = None  # TPESampler's seed: the same seed samples the same trials
    # override key → sweep expression, e.g. `optimizer.lr: tag(log, interval(1e-4, 0.1))`;
    # sweeps given on the command line are added to it and win over it
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="lrexp_optuna", node=LrexpOptunaSweeperConf, provider="lrexp"
)


class LrexpOptunaSweeper(Sweeper):
    """Search a space of overrides with Optuna's TPE sampler, one job per trial."""

    def __init__(
        self, n_trials: int, direction: Any, seed: int | None, params: DictConfig | None
    ) -> None:
        self.n_trials = n_trials
        self.direction = direction.name if isinstance(direction, Enum) else str(direction)
        self.seed = seed
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        """Run ``n_trials`` trials; return their jobs' results, one batch of one per trial."""
        import optuna

        from hydra_plugins.lrexp_optuna import _space

        assert self.config is not None and self.launcher is not None
        if not (isinstance(self.n_trials, int) and self.n_trials >= 1):
            raise _space.SearchSpaceError(
                f"hydra.sweeper.n_trials={self.n_trials}", "must be an integer >= 1"
            )
        space = _space.parse([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        for probe in _space.probes(space):
            self._check_composes(probe)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its import set INFO: "A new study…"
        study = optuna.create_study(
            direction=self.direction, sampler=optuna.samplers.TPESampler(seed=self.seed)
        )
        log.info(
            "lrexp_optuna: %d trials, %s, seed %s, searching %s",
            self.n_trials,
            self.direction,
            self.seed,
            ", ".join(f"{k} ~ {_space.describe(d)}" for k, d in space.distributions.items()),
        )
        returns = []
        for job_idx in range(self.n_trials):
            trial = study.ask(space.distributions)
            overrides = space.overrides(trial.params)
            self._check_composes(overrides)
            (ret,) = self.launcher.launch([overrides], initial_job_idx=job_idx)
            returns.append([ret])
            value = _objective(ret)
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                log.warning("trial %d failed: %s", trial.number, " ".join(overrides))
                if ret.status != JobStatus.COMPLETED:
                    _ = ret.return_value  # a job that raised stops the sweep, as in Hydra's own
            else:
                study.tell(trial, value)
            self._log_progress(study)
        self._write_results(study, space, sweep_dir)
        return returns

    def _check_composes(self, overrides: list[str]) -> None:
        """Compose a trial's config here, so a bad key fails before its job is launched."""
        from hydra_plugins.lrexp_optuna._space import SearchSpaceError

        try:
            self.validate_batch_is_legal([overrides])
        except (HydraException, OmegaConfBaseException) as e:
            reason = str(e).strip()
            if e.__cause__ is not None:  # Hydra's message says where, OmegaConf's says why
                reason += "\n" + str(e.__cause__).strip()
            raise SearchSpaceError(
                " ".join(overrides), f"this trial's config does not compose: {reason}"
            ) from e

    def _log_progress(self, study: Any) -> None:
        last = study.trials[-1]
        done = [t for t in study.trials if t.values is not None]
        best = f"best {study.best_value:.6g} (trial {study.best_trial.number})" if done else "none"
        value = f"{last.value:.6g}" if last.values is not None else "FAILED"
        log.info("lrexp_optuna: trial %d: %s; %s", last.number, value, best)

    def _write_results(self, study: Any, space: Any, sweep_dir: Path) -> None:
        # A diverged job returns inf (rankable, so the search goes on) but its run FAILED: it
        # counts as failed here as in the sweep's summary, and is never the best.
        completed = [t for t in study.trials if t.values is not None and math.isfinite(t.value)]
        results: dict[str, Any] = {
            "name": "lrexp_optuna",
            "direction": self.direction,
            "seed": self.seed,
            "n_trials": len(study.trials),
            "n_failed": len(study.trials) - len(completed),
            "best_trial": None,  # its number, which is its job's number
            "best_value": None,
            "best_params": None,
            "best_overrides": None,
        }
        if completed:
            pick = min if self.direction == "minimize" else max
            best = pick(completed, key=lambda t: t.value)
            results.update(
                best_trial=best.number,
                best_value=float(best.value),
                best_params=dict(best.params),
                best_overrides=space.overrides(best.params),
            )
            log.info(
                "lrexp_optuna: best value %.6g at trial %d: %s",
                best.value,
                best.number,
                " ".join(space.overrides(best.params)),
            )
        else:
            log.warning("lrexp_optuna: every trial failed")
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")


def _objective(ret: JobReturn) -> float | None:
    """A job's objective: its return value as a float; None if it failed or returned NaN."""
    if ret.status != JobStatus.COMPLETED:
        return None
    try:
        value = float(ret.return_value)
    except (TypeError, ValueError):
        log.warning("the task function returned %r, not a number", ret.return_value)
        return None
    return None if math.isnan(value) else value
