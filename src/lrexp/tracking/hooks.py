"""A test hook: stop lrexp at a named phase of a run, so that a test can hit that phase with a
signal without guessing its timing with sleeps.

With ``LREXP_TEST_PAUSE_AT=<phase>`` and ``LREXP_TEST_PAUSE_DIR=<dir>`` set, the process that
reaches ``<phase>`` writes ``<dir>/<phase>.paused`` (holding its pid) and waits until
``<dir>/<phase>.go`` exists, or at most ``LREXP_TEST_PAUSE_S`` seconds (default 60). Unset (the
normal case), :func:`pause_at` returns at once. The phases, and the process that pauses:

========== ============================================================ ==================
phase      where                                                        process
========== ============================================================ ==================
startup    the tracking process started, before Hydra and JAX           training
store      the run's store about to be created or opened                tracking
params     the run's params sent                                        training
training   after the first compiled chunk of training                   training
curves     the curves sent (training finished)                          training
artifacts  history.csv, theta.json and the plots sent                   training
model      the model being logged                                       tracking
end        everything sent, before the run is ended                     training
sweep-end  a sweep's summary, before its parent run is ended (not in     launcher
           PHASES: the single-run matrix never reaches it)
========== ============================================================ ==================
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

PHASES = ("startup", "store", "params", "training", "curves", "artifacts", "model", "end")
_AT = os.environ.get("LREXP_TEST_PAUSE_AT") or None
BEFORE_PAUSE: list[Callable[[], None]] = []  # run before pausing (registered by the client)


def pause_at(phase: str) -> None:
    """Pause at ``phase`` when a test asked for it (see the module's docstring); else nothing."""
    if phase != _AT:
        return
    for prepare in BEFORE_PAUSE:  # what was sent before the phase is stored (the client's sync)
        prepare()
    folder = Path(os.environ.get("LREXP_TEST_PAUSE_DIR", "."))
    go = folder / f"{phase}.go"
    (folder / f"{phase}.paused").write_text(str(os.getpid()))
    deadline = time.monotonic() + float(os.environ.get("LREXP_TEST_PAUSE_S", "60"))
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # a signal that raises (SIGINT, SIGTERM) ends the wait here
