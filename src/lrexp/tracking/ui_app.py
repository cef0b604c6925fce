"""``mlflow ui --app-name lrexp``: MLflow's own server, opening experiments on their runs table.

MLflow 3.17's UI opens an experiment in its GenAI view (traces, latency, a "Detect Issues"
popover); the runs that lrexp logs are behind a "Model training" toggle. The UI keeps that choice
in the browser's local storage (``mlflow.workflowType_v1``, the JSON string ``"genai"`` or
``"machine_learning"``; no experiment tag, server option or variable sets it), and reads a
``workflowType`` URL parameter for one visit only. This app is MLflow's, registered under the
``mlflow.app`` entry point like MLflow's own ``basic-auth``, with one change: the page it serves
sets that choice to ``machine_learning`` where the browser has made none, so a user who opens the
home page and clicks an experiment lands on its runs. A user who picks the GenAI view keeps it.
It also marks the MLflow Assistant's first-load opening as done
(``mlflow.assistant.fab.autoOpenedOnFirstLoad_v1``), so its chat panel does not open over a third
of the page on a user's first visit; its button stays, and opens it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

WORKFLOW_KEY = "mlflow.workflowType_v1"  # the UI's own keys (useLocalStorage, version 1)
ASSISTANT_KEY = "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"
DEFAULTS = {WORKFLOW_KEY: "'machine_learning'", ASSISTANT_KEY: "true"}  # JSON, as the UI writes
SCRIPT = (
    "<script>try{"
    + "".join(
        f"if(localStorage.getItem('{key}')===null)localStorage.setItem('{key}',JSON.stringify({v}));"
        for key, v in DEFAULTS.items()
    )
    + "}catch(e){}</script>"
)

UI_URL = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default
RUNS_VIEW = "runs?workflowType=machine_learning"  # the experiment page's runs table, this visit


def mlflow_command() -> str:
    """How to call this environment's ``mlflow``: plain where it is the one on PATH, else its path
    (``.venv/bin/mlflow`` where the virtual environment is not activated)."""
    mine = Path(sys.executable).parent / "mlflow"
    if not mine.is_file():
        return "mlflow"
    found = shutil.which("mlflow")
    if found is not None and Path(found).resolve() == mine.resolve():
        return "mlflow"
    relative = os.path.relpath(mine)
    if relative.startswith(".."):
        return str(mine)
    return relative if os.sep in relative else os.path.join(".", relative)


def runs_link(base_url: str, experiment_id: str | None) -> str:
    """The page of an experiment's runs (the UI's home page where the experiment is unknown)."""
    base = base_url.rstrip("/")
    if experiment_id is None:
        return base + "/"
    return f"{base}/#/experiments/{experiment_id}/{RUNS_VIEW}"


def ui_hint(uri: str, experiment_id: str | None) -> str:
    """What to type to see the runs of ``uri`` in the UI, and the page to open; two lines for a
    SQLite store (the command, then the link), one for a tracking server (the link)."""
    if uri.startswith(("http://", "https://")):
        return runs_link(uri, experiment_id)
    command = f"{mlflow_command()} ui --app-name lrexp --backend-store-uri {uri}"
    return f"{command}\nthen open {runs_link(UI_URL, experiment_id)}"


def index_html(static_folder: str) -> str | None:
    """MLflow's ``index.html`` with :data:`SCRIPT` first in its head, or None without one."""
    path = Path(static_folder, "index.html")
    if not path.is_file():
        return None
    page = path.read_text(encoding="utf-8")
    return page.replace("<head>", "<head>" + SCRIPT, 1) if "<head>" in page else SCRIPT + page


def create_app():
    """MLflow's server app (FastAPI around its Flask app), its page serving :func:`index_html`."""
    from flask import Response
    from mlflow.server import app as flask_app
    from mlflow.server import serve
    from mlflow.server.fastapi_app import create_fastapi_app

    def serve_index():
        page = index_html(flask_app.static_folder)
        return serve() if page is None else Response(page, mimetype="text/html")

    flask_app.view_functions["serve"] = serve_index
    return create_fastapi_app(flask_app)
