"""A run's page in the MLflow UI leads with its loss curves, in a real (headless) Chromium.

The UI's "Model metrics" tab groups a run's charts into sections by the metric key minus its last
``/`` part, named sections first, alphabetically; so lrexp logs its curves as ``loss/…``,
``model/…`` (θ's trajectory), ``optimizer/…`` and ``per_fold/fold_k/…`` (see
:mod:`lrexp.tracking.metric_names`). Screenshots go to ``$LREXP_TEST_ARTIFACTS``.
"""

from __future__ import annotations

import re
import uuid

import pytest
from conftest import typed_config
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_server import mlflow_server
from test_ui import WAIT_S, artifacts_dir, assistant_open, chromium, screenshot, wait_for_text

from lrexp import pipeline

__all__ = ["artifacts_dir"]  # the fixture, shared with test_ui
HEADER = '[data-testid="experiment-view-compare-runs-section-header"]'


def section_headings(d) -> list[str]:
    """The "Model metrics" tab's section headings, top to bottom, without their chart counts."""
    texts = [e.text for e in d.find_elements(By.CSS_SELECTOR, HEADER)]
    # each reads "loss (3) Add chart": the name, the number of charts, a button
    return [re.split(r"\s*\(\d+\)", t.replace("\n", " "))[0].strip() for t in texts]


def wait_for_sections(d, last: str) -> list[str]:
    """Wait until the headings are drawn down to ``last``; return them."""
    try:
        WebDriverWait(d, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: last in section_headings(d)
        )
    except TimeoutException:
        pytest.fail(f"{d.current_url} never showed the section {last!r}: {section_headings(d)}")
    return section_headings(d)


@pytest.mark.slow
def test_a_runs_page_leads_with_the_loss_and_a_cv_run_not_with_a_fold(tmp_path, artifacts_dir):
    store, experiment = f"sqlite:///{tmp_path / 'mlflow.db'}", f"ui-{uuid.uuid4().hex[:8]}"
    ids = {}
    for kind, extra in (("single", []), ("cv", ["train.folds=3"])):
        overrides = [f"tracking.uri={store}", f"tracking.experiment={experiment}"]
        overrides += ["train.epochs=3", "tracking.log_model=false", *extra]
        outcome = pipeline.run(typed_config(*overrides), base_dir=tmp_path, overrides=overrides)
        ids[kind] = outcome.run_id
    from mlflow.tracking import MlflowClient

    exp_id = MlflowClient(store).get_experiment_by_name(experiment).experiment_id
    with mlflow_server(store, tmp_path, app_name="lrexp") as url, chromium() as d:
        d.get(f"{url}/#/experiments/{exp_id}/runs/{ids['single']}/model-metrics")
        wait_for_text(d, "Model metrics", "train_mse")
        assert not assistant_open(d)
        headings = wait_for_sections(d, "Model metrics")
        assert headings[:3] == ["loss", "model", "optimizer"], headings
        assert headings[-1] == "Model metrics"  # the summaries, after the curves
        screenshot(d, artifacts_dir, "mlflow-ui-run-metrics.png")

        d.get(f"{url}/#/experiments/{exp_id}/runs/{ids['cv']}/model-metrics")
        wait_for_text(d, "Model metrics", "train_mse")
        assert not assistant_open(d)
        headings = wait_for_sections(d, "per_fold/fold_3")
        assert headings[0] == "loss", headings
        first_fold = next(i for i, h in enumerate(headings) if h.startswith("per_fold/"))
        assert headings[:first_fold] == ["loss", "model", "optimizer"], headings
        assert {h for h in headings if h.startswith("per_fold/fold_1")} == {
            "per_fold/fold_1",
            "per_fold/fold_1/loss",
            "per_fold/fold_1/model",
            "per_fold/fold_1/optimizer",
        }
        screenshot(d, artifacts_dir, "mlflow-ui-cv-run-metrics.png")
