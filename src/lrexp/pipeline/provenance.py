"""Provenance of a run: code version, library versions, JAX backend, the command line."""

from __future__ import annotations

import functools
import platform
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jax


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict[str, str]:
    """Git commit and dirty flag of the lrexp source tree, where it is a git checkout."""
    here = Path(__file__).resolve().parent
    commit = _git("rev-parse", "HEAD", cwd=here)
    if commit is None:
        return {}
    dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=here)
    return {"lrexp.git_commit": commit, "lrexp.git_dirty": str(bool(dirty)).lower()}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def tags(dtype: str) -> dict[str, str]:
    """Provenance tags for an MLflow run."""
    return {**_process_tags(), "lrexp.dtype": dtype}


@functools.cache
def _process_tags() -> dict[str, str]:
    """The tags every run of this process shares, looked up once (git runs two subprocesses)."""
    out = {
        "lrexp.version": _version("lrexp"),
        "lrexp.python": platform.python_version(),
        **{
            f"lrexp.{p.replace('-', '_')}": _version(p)
            for p in ("jax", "jaxlib", "optax", "mlflow", "hydra-core")
        },
        "lrexp.jax_backend": jax.default_backend(),
        "lrexp.jax_devices": str(jax.device_count()),  # full batches and sweeps use them all
        "lrexp.command": command_line(),
    }
    out.update(code_version())
    return out


def command_line() -> str:
    """The command as the user typed it, as near as the interpreter knows."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("lrexp/train.py"):
        argv[0] = "-m lrexp.train"
    return " ".join(["python", *(shlex.quote(a) if a != "-m lrexp.train" else a for a in argv)])
