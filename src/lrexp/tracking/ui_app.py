"""``mlflow ui --app-name lrexp``: MLflow's own server, opening experiments on their runs table.

MLflow 3.17's UI opens an experiment in its GenAI view (traces, latency, a "Detect Issues"
popover); the runs that lrexp logs are behind a "Model training" toggle. The UI keeps that choice
in the browser's local storage (``mlflow.workflowType_v1``, the JSON string ``"genai"`` or
``"machine_learning"``; no experiment tag, server option or variable sets it), and reads a
``workflowType`` URL parameter for one visit only. This app is MLflow's, registered under the
``mlflow.app`` entry point like MLflow's own ``basic-auth``, with one change: the page it serves
sets that choice to ``machine_learning`` where the browser has made none, so a user who opens the
home page and clicks an experiment lands on its runs. A user who picks the GenAI view keeps it.
"""

from __future__ import annotations

from pathlib import Path

WORKFLOW_KEY = "mlflow.workflowType_v1"  # the UI's own key (useLocalStorage, version 1)
SCRIPT = (
    f"<script>try{{if(localStorage.getItem('{WORKFLOW_KEY}')===null)"
    f"localStorage.setItem('{WORKFLOW_KEY}',JSON.stringify('machine_learning'))}}catch(e){{}}"
    "</script>"
)


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
