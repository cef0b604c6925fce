"""A sweep compared in the MLflow UI, as a user sees it in a real (headless) Chromium.

The MLflow UI is a React single-page app: its content exists only after its JavaScript has run and
fetched the runs, so the test drives the browser with Selenium and Debian's ``chromedriver``
(``.ci/run`` installs ``chromium`` and ``chromium-driver``) and reads what is rendered. Screenshots
go to ``$LREXP_TEST_ARTIFACTS`` (default: the test's temporary directory).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from test_server import lrexp_sweep, mlflow_server, require

WAIT_S = 60  # the longest wait for the UI to show something; a CI machine can be slow
COLUMNS = ["optimizer.name", "optimizer.lr", "final_test_mse"]  # added to the runs table


def chromium_paths() -> tuple[str | None, str | None]:
    """The browser binary (Debian's /usr/bin/chromium is a shell wrapper around it) and driver."""
    real = Path("/usr/lib/chromium/chromium")
    browser = str(real) if real.is_file() else shutil.which("chromium")
    return browser, shutil.which("chromedriver")


@contextmanager
def chromium() -> Iterator[WebDriver]:
    browser, driver = chromium_paths()
    require(
        browser is not None and driver is not None,
        "Chromium and chromedriver",
        "apt-get install chromium chromium-driver",
    )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1800,1000")
    # An explicit driver path: Selenium Manager (which would download one) is never run.
    browser_session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser_session
    finally:
        browser_session.quit()


def page_text(d: WebDriver) -> str:
    return d.find_element(By.TAG_NAME, "body").text


def wait_for_text(d: WebDriver, *texts: str) -> str:
    """Wait until the page shows every one of ``texts``; return the page's text."""
    try:
        WebDriverWait(d, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: all(t in page_text(d) for t in texts)
        )
    except TimeoutException:
        missing = [t for t in texts if t not in page_text(d)]
        pytest.fail(f"the UI at {d.current_url} never showed {missing}:\n{page_text(d)[:3000]}")
    return page_text(d)


def click(d: WebDriver, element) -> None:
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def close_assistant(d: WebDriver) -> None:
    """Close the MLflow Assistant panel, which covers a third of the page, if it is open."""
    for button in d.find_elements(
        By.CSS_SELECTOR, 'button[data-component-id="mlflow.assistant.chat_panel.close"]'
    ):
        click(d, button)


def run_links(d: WebDriver, run_id: str) -> list:
    """The links to a run's page shown in the runs table."""
    return d.find_elements(By.CSS_SELECTOR, f'.ag-row a[href$="/runs/{run_id}"]')


def table_row_text(d: WebDriver, run_id: str) -> str:
    """The text of the runs table's row of a run (its pinned and its scrolling cells)."""
    links = run_links(d, run_id)
    if len(links) != 1:
        return ""
    cell = links[0].find_element(By.XPATH, "./ancestor::*[@row-index][1]")
    index = cell.get_attribute("row-index")
    rows = d.find_elements(By.CSS_SELECTOR, f'.ag-row[row-index="{index}"]')
    return " ".join(r.text for r in rows)


def wait_for_row(d: WebDriver, run_id: str, *texts: str) -> None:
    """Wait until the runs table's row of a run shows every one of ``texts``."""
    try:
        WebDriverWait(d, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: all(t in table_row_text(d, run_id) for t in texts)
        )
    except TimeoutException:
        pytest.fail(f"the row of run {run_id} never showed {texts}: {table_row_text(d, run_id)}")


def screenshot(d: WebDriver, directory: Path, name: str) -> Path:
    path = directory / name
    assert d.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


@pytest.fixture
def artifacts_dir(tmp_path) -> Path:
    directory = Path(os.environ.get("LREXP_TEST_ARTIFACTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.mark.slow
def test_mlflow_ui_shows_sweep_parent_children_params_and_metrics(tmp_path, artifacts_dir):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = lrexp_sweep(
        tmp_path,
        "optimizer=sgd,adam",
        "train.epochs=2",
        "tracking.log_model=false",
        f"tracking.uri={store}",
        "tracking.experiment=ui-sweep",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    client = MlflowClient(store)
    exp_id = client.get_experiment_by_name("ui-sweep").experiment_id
    runs = client.search_runs([exp_id])
    (parent,) = [r for r in runs if r.data.tags.get("lrexp.sweep") == "true"]
    children = sorted(
        (r for r in runs if r.info.run_id != parent.info.run_id),
        key=lambda r: r.data.params["optimizer.name"],
    )
    assert [r.data.params["optimizer.name"] for r in children] == ["adam", "sgd"]

    with mlflow_server(store, tmp_path) as url, chromium() as d:
        # 1. The runs table ("Model training" view): the parent, expanded to show its children.
        d.get(f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning")
        wait_for_text(d, parent.info.run_name)
        close_assistant(d)
        assert run_links(d, parent.info.run_id)
        assert not any(run_links(d, r.info.run_id) for r in children)  # collapsed at first
        expand = d.find_element(By.CSS_SELECTOR, 'button[data-component-id*="runnamecellrenderer"]')
        click(d, expand)
        wait_for_text(d, *(r.info.run_name for r in children))
        # Add the swept params and a metric as columns, as a user comparing the jobs would.
        click(d, d.find_element(By.XPATH, '//button[.//text()="Columns"]'))
        for column in COLUMNS:
            click(d, d.find_element(By.XPATH, f'//span[text()="{column}"]'))
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        for r in children:
            p, m = r.data.params, r.data.metrics
            wait_for_row(d, r.info.run_id, r.info.run_name, p["optimizer.name"], p["optimizer.lr"])
            assert repr(m["final_test_mse"]) in table_row_text(d, r.info.run_id)
        screenshot(d, artifacts_dir, "mlflow-ui-sweep.png")

        # 2. A child's page: its parent, its params and its metrics with their values.
        child = children[0]
        d.get(
            f"{url}/#/experiments/{exp_id}/runs/{child.info.run_id}?workflowType=machine_learning"
        )
        text = wait_for_text(d, child.info.run_name, "Parent run", "optimizer.lr", "final_test_mse")
        assert parent.info.run_name[:40] in text
        for key in ("optimizer.lr", "train.epochs", "data.noise"):
            assert f"{key}\n{child.data.params[key]}" in text
        for key in ("final_test_mse", "gap_theta", "model/theta_1"):
            assert f"{key}\n{child.data.metrics[key]!r}" in text
        screenshot(d, artifacts_dir, "mlflow-ui-child-run.png")

        # 3. MLflow's comparison of the two jobs: params side by side.
        ids = ",".join(f'"{r.info.run_id}"' for r in children)
        d.get(f'{url}/#/compare-runs?runs=[{ids}]&experiments=["{exp_id}"]')
        text = wait_for_text(d, "Comparing 2 Runs", *(r.info.run_name for r in children))
        lrs = " ".join(r.data.params["optimizer.lr"] for r in children)
        assert f"optimizer.lr {lrs}" in text
        assert "optimizer.name adam sgd" in text
        screenshot(d, artifacts_dir, "mlflow-ui-compare.png")

        # 4. A run's SVG figure in the artifact viewer: shown as an image, and decoded.
        d.get(
            f"{url}/#/experiments/{exp_id}/runs/{child.info.run_id}/artifacts/plots/loss_curve.svg"
            "?workflowType=machine_learning"
        )

        def drawn_svg(d: WebDriver) -> bool:
            return any(
                d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
                for img in d.find_elements(By.CSS_SELECTOR, 'img[src^="blob:"], img[src*="svg"]')
            )

        try:
            WebDriverWait(d, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
                drawn_svg
            )
        except TimeoutException:
            pytest.fail(f"no decoded image for loss_curve.svg:\n{page_text(d)[:3000]}")
        screenshot(d, artifacts_dir, "mlflow-ui-svg-artifact.png")
