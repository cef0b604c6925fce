"""A run's heartbeat: the tag `lrexp.heartbeat` stamped while the process that owns the run lives,
so that `python -m lrexp.runs reap` can tell a dead run (SIGKILL, power loss) from a live one."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

from mlflow.tracking import MlflowClient

HEARTBEAT_S = float(os.environ.get("LREXP_HEARTBEAT_S", "10"))  # seconds between heartbeats


class Heartbeat:
    """A daemon thread that stamps ``lrexp.heartbeat`` on a run while the process lives (and,
    given ``alive``, while it says the run's training process does).

    SIGKILL, OOM and power loss cannot be caught; a run whose heartbeat went stale is dead, and
    ``python -m lrexp.runs reap`` marks it KILLED.
    """

    def __init__(
        self,
        uri: str,
        run_id: str,
        every: float = HEARTBEAT_S,
        alive: Callable[[], bool] | None = None,
    ):
        self.client, self.run_id, self.every = MlflowClient(uri), run_id, every
        self.alive = alive or (lambda: True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="lrexp-heartbeat")

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            if not self.alive():  # its training process is gone or silent: let it go stale
                continue
            # a busy store skips a beat; staleness is judged generously
            with contextlib.suppress(Exception):
                self.client.set_tag(self.run_id, "lrexp.heartbeat", f"{time.time():.3f}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


_beating: dict[str, Heartbeat] = {}  # run id → its heartbeat, for runs not opened here


def start_heartbeat(uri: str, run_id: str) -> None:
    """Stamp a heartbeat on ``run_id`` (a sweep's parent) until :func:`stop_heartbeat`."""
    _beating[run_id] = Heartbeat(uri, run_id).__enter__()


def stop_heartbeat(run_id: str) -> None:
    beat = _beating.pop(run_id, None)
    if beat is not None:
        beat.__exit__()
