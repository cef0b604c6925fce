"""Housekeeping of runs: ``python -m lrexp.runs reap`` ends runs whose process died;
``python -m lrexp.runs repair`` mends a store an interrupted upgrade left half-migrated.

SIGKILL, the OOM killer and power loss leave a run RUNNING with nobody to end it. Every lrexp run
stamps a heartbeat (tag ``lrexp.heartbeat``) every few seconds while its training process lives;
``reap`` marks the RUNNING runs whose heartbeat went stale as KILLED, with the reason "no
heartbeat". It works on a store that cannot take MLflow's writes (full disk): the end is then
written with sqlite3 directly.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_STALE_S = 120.0  # well above the heartbeat interval (10 s) and a busy store's stalls


def reap(uri: str, experiment: str | None, older_than: float) -> tuple[list[dict], list[str]]:
    """Mark stale RUNNING runs KILLED with the reason; return them, and a line for each run
    that could not be ended."""
    from lrexp.tracking import lifecycle, reader

    stale, failed = reader.stale_runs(uri, experiment, older_than), []
    for r in stale:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_beat"]))
        try:
            lifecycle.close_run(
                "KILLED", f"no heartbeat since {since}", uri=uri, run_id=r["run_id"]
            )
        except Exception as e:
            failed.append(f"{r['run_id']}: {_line(e)}")
    return [r for r in stale if not any(f.startswith(r["run_id"]) for f in failed)], failed


def _line(e: BaseException) -> str:
    from lrexp.tracking import signals

    return signals.one_line(e)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrexp.runs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("reap", help="mark runs whose heartbeat went stale as KILLED")
    p.add_argument("--uri", default="sqlite:///mlflow.db", help="tracking URI")
    p.add_argument("--experiment", default=None, help="only this experiment (default: all)")
    p.add_argument(
        "--stale",
        "--older-than",
        dest="stale",
        type=float,
        default=DEFAULT_STALE_S,
        help=f"seconds without a heartbeat (default {DEFAULT_STALE_S:g})",
    )
    r = sub.add_parser("repair", help="drop the tables an interrupted upgrade left behind")
    r.add_argument("--uri", default="sqlite:///mlflow.db", help="tracking URI (sqlite:///…)")
    args = parser.parse_args(argv)
    from lrexp.tracking import store, store_file

    uri = store.resolve_uri(args.uri, Path.cwd())
    if store.missing_store(uri) is not None:
        print(f"lrexp: error: --uri={args.uri}: no such store", file=sys.stderr)
        return 2
    if args.command == "repair":
        dropped = store_file.repair(uri)
        print(f"dropped {', '.join(dropped)}" if dropped else "nothing to repair")
        return 0
    try:
        reaped, failed = reap(uri, args.experiment, args.stale)
    except Exception as e:  # the store cannot be read: say why in a line
        print(f"lrexp: error: --uri={args.uri}: {_line(e)}", file=sys.stderr)
        return 1
    for r in reaped:
        print(
            f"KILLED {r['run_id']} ({r['name']}): no heartbeat for "
            f"{time.time() - r['last_beat']:.0f} s"
        )
    for line in failed:
        print(f"lrexp: error: could not end run {line}", file=sys.stderr)
    print(f"{len(reaped)} stale run(s) marked KILLED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
