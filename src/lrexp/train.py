"""The command line: ``python -m lrexp.train`` composes the config with Hydra and runs the
pipeline (:func:`lrexp.pipeline.run`). Only the CLI's concerns live here: exit codes, one-line
errors, logging, JAX's compilation cache and the tracking process started before JAX's import.

python -m lrexp.train optimizer=adam
python -m lrexp.train experiment=tutorial
python -m lrexp.train data=csv data.path=houses.csv data.target=price
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # python -m lrexp.train
    # The tracking process starts before JAX is imported (its MLflow start-up overlaps JAX's);
    # then this file is imported as the module lrexp.train, which runs the command and exits.
    from lrexp.tracking import client, hooks, signals

    signals.install()  # from here on, SIGTERM and SIGINT stop cleanly
    try:
        client.start_for(sys.argv[1:])
        hooks.pause_at("startup")  # a test hook (lrexp.tracking.hooks); nothing when unset
        from lrexp.train import command_line
    except signals.STOPS as e:
        client.stop()
        print(f"lrexp: stopped: {signals.reason(e)}", file=sys.stderr, flush=True)
        os._exit(signals.exit_code(e))
    command_line(sys.argv[1:])

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from lrexp import config, quiet_libraries
from lrexp.config import ConfigError
from lrexp.core.data import DataError
from lrexp.pipeline import Diverged, run
from lrexp.tracking import signals

log = logging.getLogger("lrexp")


@hydra.main(version_base="1.3", config_path="pkg://lrexp.conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one job; return the test MSE (the objective a Hydra sweeper minimizes).

    In a multirun a failing job does not stop the sweep: its run is FAILED with the reason, and
    the job returns NaN, which sweepers rank last.
    """
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    quiet_libraries()
    use_compilation_cache()
    sweep = None
    if hc.mode == RunMode.MULTIRUN and cfg.tracking.enabled:
        from lrexp.sweeps import callback as sweep_mod
        from lrexp.tracking.store import resolve_uri

        uri = resolve_uri(cfg.tracking.uri, hydra.utils.get_original_cwd())
        sweep = sweep_mod.job_context(hc.job.num, uri, cfg.tracking.experiment)
    try:
        typed = config.to_object(cfg)
        with signals.sigterm_raises():
            outcome = run(
                typed, base_dir=hydra.utils.get_original_cwd(), overrides=overrides, sweep=sweep
            )
        return outcome.objective
    except (ConfigError, DataError, MissingMandatoryValue) as e:
        error = (
            ConfigError(e.full_key, "???", "is required: set it on the command line")
            if isinstance(e, MissingMandatoryValue)
            else e
        )
        if sweep is None:
            _fail(error)
        from lrexp.sweeps import callback as sweep_mod

        sweep_mod.record_bad_job(overrides, sweep, error)
    except Diverged as e:
        if sweep is None:
            print(f"lrexp: error: {e}", file=sys.stderr, flush=True)
            sys.exit(3)
        log.error("job %d %s", hc.job.num, e)
        return float("inf")  # a sweeper can rank it: worse than any finite result
    except Exception as e:
        if sweep is None:
            if signals.store_failure(e):  # the store failed: its run ended FAILED with the reason
                line = signals.one_line(e)
                print(f"lrexp: error: tracking.uri={cfg.tracking.uri}: {line}", file=sys.stderr)
                sys.exit(4)
            raise
        log.exception("job %d failed: %s", hc.job.num, e)  # its run is already FAILED
    return float("nan")


def use_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk across runs (JAX's persistent compilation cache).

    A short run spends most of its time compiling about 70 small programs (the training loop, the
    data generator, the metrics); loading them back takes a few milliseconds each. The cache lives
    in ``$XDG_CACHE_HOME/lrexp/jax`` (``~/.cache/lrexp/jax``); ``JAX_COMPILATION_CACHE_DIR`` picks
    another directory, and set empty it turns the cache off.
    """
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        jax.config.update("jax_compilation_cache_dir", str(Path(home, "lrexp", "jax")))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        # JAX's default (1 s) caches none of lrexp's programs: each compiles in 5-900 ms.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _fail(error: Exception) -> None:
    print(f"lrexp: error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)


def cli() -> None:
    """``python -m lrexp.train``: check a single run's overrides in one line, then run Hydra."""
    from lrexp import preflight
    from lrexp.tracking import client

    try:
        use_compilation_cache()
        problem = preflight.check(sys.argv[1:])
        if problem is not None:
            print(f"lrexp: error: {problem}", file=sys.stderr, flush=True)
            sys.exit(2)
        main()
    finally:
        client.stop()  # returns once the tracking process has stored the run


def exit_now(code: int | str | None) -> None:
    """Exit a single run as ``sys.exit(code)`` would, without the interpreter's teardown.

    Everything is stored by now; tearing down JAX's and Hydra's modules object by object would
    take another 0.5 s of every run. Output and log files are flushed first. (Not after a
    multirun with workers: its launcher's worker processes end at the interpreter's exit.)
    """
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code or 0)


def command_line(argv: list[str]) -> None:
    """Run :func:`cli` and exit with its status: without the interpreter's teardown after a
    single run or a batched sweep, once everything is stored."""
    from lrexp.tracking import client

    try:
        cli()
    except SystemExit as e:
        code = e.code
    except signals.STOPS as e:  # its run ended KILLED, with the reason and what it had stored
        print(f"lrexp: stopped: {signals.reason(e)}", file=sys.stderr, flush=True)
        code = signals.exit_code(e)
    else:
        code = 0
    if not (client.single_run(argv) or (client.batched_sweep(argv) and code == 0)):
        # a multirun's launchers (joblib's workers, submitit) shut down at exit, and a sweep
        # that failed ends its parent run then; lrexp's batched launcher has no workers
        sys.exit(code)
    exit_now(code)
