"""Housekeeping of runs: ``python -m lrexp.runs reap`` ends runs whose process died.

SIGKILL, the OOM killer and power loss leave a run RUNNING with nobody to end it. Every lrexp run
stamps a heartbeat (tag ``lrexp.heartbeat``) every few seconds while its process lives; ``reap``
marks the RUNNING runs whose heartbeat went stale as KILLED, with the reason "no heartbeat".
"""

from __future__ import annotations

import argparse
import sys
import time

DEFAULT_STALE_S = 120.0  # well above the heartbeat interval (10 s) and a busy store's stalls


def reap(uri: str, experiment: str | None, older_than: float) -> list[dict]:
    """Mark stale RUNNING runs KILLED with the reason; return them."""
    from lrexp.tracking import lifecycle, reader

    stale = reader.stale_runs(uri, experiment, older_than)
    for r in stale:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_beat"]))
        lifecycle.set_tags(
            uri, r["run_id"], {"lrexp.failure_reason": f"no heartbeat since {since}"}
        )
        lifecycle.end_run(uri, r["run_id"], "KILLED")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrexp.runs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("reap", help="mark runs whose heartbeat went stale as KILLED")
    p.add_argument("--uri", default="sqlite:///mlflow.db", help="tracking URI")
    p.add_argument("--experiment", default=None, help="only this experiment (default: all)")
    p.add_argument(
        "--stale",
        type=float,
        default=DEFAULT_STALE_S,
        help=f"seconds without a heartbeat (default {DEFAULT_STALE_S:g})",
    )
    args = parser.parse_args(argv)
    from pathlib import Path

    from lrexp.tracking import store

    uri = store.resolve_uri(args.uri, Path.cwd())
    if store.missing_store(uri) is not None:
        print(f"lrexp: error: --uri={args.uri!r}: no such store", file=sys.stderr)
        return 2
    reaped = reap(uri, args.experiment, args.stale)
    for r in reaped:
        print(
            f"KILLED {r['run_id']} ({r['name']}): no heartbeat for "
            f"{time.time() - r['last_beat']:.0f} s"
        )
    print(f"{len(reaped)} stale run(s) marked KILLED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
