"""A multirun's job as the batched launcher holds it: its number, overrides and composed config."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig


@dataclass(frozen=True)
class Job:
    num: int
    overrides: list[str]
    cfg: DictConfig  # the job's composed config, without the ``hydra`` node
