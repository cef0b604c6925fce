"""A run's name from its overrides, and the sweep a run belongs to (:class:`SweepJob`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lrexp.config.overrides import key_values

if TYPE_CHECKING:
    from lrexp.config import Config


@dataclass(frozen=True)
class SweepJob:
    """A job of a multirun: its parent run, the sweep's experiment and the job's number."""

    parent_run_id: str
    experiment_id: str
    job_num: int
    fixed: tuple[str, ...] = ()  # overrides every job shares (left out of the child's name)

    def varying(self, overrides: list[str]) -> list[str]:
        """The overrides that tell this job apart from the others of its sweep."""
        shared = key_values(self.fixed)
        pairs = zip(overrides, key_values(overrides), strict=True)
        return [o for o, kv in pairs if kv not in shared]


def describe(overrides: list[str]) -> str:
    """A run's name from its overrides: where it is tracked and Hydra's own settings left out."""
    return ",".join(o for o in overrides if not o.lstrip("+~").startswith(("tracking.", "hydra")))


def run_name(cfg: Config, overrides: list[str]) -> str:
    """The MLflow run name: the configured one, else the overrides, else optimizer-data."""
    return cfg.tracking.run_name or describe(overrides) or f"{cfg.optimizer.name}-{cfg.data.name}"
