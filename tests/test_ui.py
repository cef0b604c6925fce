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


def assistant_open(d: WebDriver) -> bool:
    """Whether the MLflow Assistant's chat panel (a third of the page) is open; the lrexp app
    keeps it from opening by itself on a first visit."""
    return any(
        button.is_displayed()
        for button in d.find_elements(
            By.CSS_SELECTOR, 'button[data-component-id="mlflow.assistant.chat_panel.close"]'
        )
    )


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


def drawn_svg(d: WebDriver) -> bool:
    """Whether the page shows a decoded image (the artifact viewer's SVG)."""
    return any(
        d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
        for img in d.find_elements(By.CSS_SELECTOR, 'img[src^="blob:"], img[src*="svg"]')
    )


def wait_for_image(d: WebDriver, what: str) -> None:
    try:
        WebDriverWait(d, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
            drawn_svg
        )
    except TimeoutException:
        pytest.fail(f"no decoded image for {what}:\n{page_text(d)[:3000]}")


def click_link(d: WebDriver, href_end: str) -> None:
    """Click the first link whose address ends with ``href_end``, once the page shows it."""
    selector = f'a[href$="{href_end}"]'
    try:
        WebDriverWait(d, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, selector)
        )
    except TimeoutException:
        pytest.fail(f"no link to {href_end} at {d.current_url}:\n{page_text(d)[:3000]}")
    click(d, d.find_elements(By.CSS_SELECTOR, selector)[0])


@pytest.mark.slow
def test_a_newcomer_goes_from_the_home_page_to_a_sweeps_runs_plots_and_comparison(
    tmp_path, artifacts_dir
):
    """The path a user walks after a sweep: ``mlflow ui --app-name lrexp``, the home page, the
    experiment, the sweep's parent and children, a child's page and charts, the comparison of
    the children, the parent's overlay plot and a child's loss curve. A screenshot at each step."""
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = "ui-sweep"
    proc = lrexp_sweep(
        tmp_path,
        "optimizer=sgd,adam",
        "train.epochs=2",
        "tracking.log_model=false",
        f"tracking.uri={store}",
        f"tracking.experiment={experiment}",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count(f"--app-name lrexp --backend-store-uri {store}") == 1, proc.stdout
    client = MlflowClient(store)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    assert f"/#/experiments/{exp_id}/runs?workflowType=machine_learning" in proc.stdout
    runs = client.search_runs([exp_id])
    (parent,) = [r for r in runs if r.data.tags.get("lrexp.sweep") == "true"]
    children = sorted(
        (r for r in runs if r.info.run_id != parent.info.run_id),
        key=lambda r: r.data.params["optimizer.name"],
    )
    assert [r.data.params["optimizer.name"] for r in children] == ["adam", "sgd"]
    shot = 0

    def step(name: str) -> None:
        nonlocal shot
        shot += 1
        screenshot(d, artifacts_dir, f"ui-{shot}-{name}.png")

    with mlflow_server(store, tmp_path, app_name="lrexp") as url, chromium() as d:
        # 1. The home page, as `mlflow ui` opens it: the experiment among the recent ones.
        d.get(f"{url}/")
        wait_for_text(d, "Recent Experiments", experiment)
        assert not assistant_open(d)
        step("home")
        click_link(d, f"#/experiments/{exp_id}")  # the home page's own link, no workflowType

        # 2. One click lands on the runs table (the lrexp app's doing): the sweep's parent,
        # collapsed, then expanded to show its children, the swept params and a metric added.
        wait_for_text(d, parent.info.run_name)
        assert not assistant_open(d)
        assert run_links(d, parent.info.run_id)
        assert not any(run_links(d, r.info.run_id) for r in children)  # collapsed at first
        expand = d.find_element(By.CSS_SELECTOR, 'button[data-component-id*="runnamecellrenderer"]')
        click(d, expand)
        wait_for_text(d, *(r.info.run_name for r in children))
        click(d, d.find_element(By.XPATH, '//button[.//text()="Columns"]'))
        for column in COLUMNS:
            click(d, d.find_element(By.XPATH, f'//span[text()="{column}"]'))
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        for r in children:
            p, m = r.data.params, r.data.metrics
            wait_for_row(d, r.info.run_id, r.info.run_name, p["optimizer.name"], p["optimizer.lr"])
            assert repr(m["final_test_mse"]) in table_row_text(d, r.info.run_id)
        step("runs")
        screenshot(d, artifacts_dir, "mlflow-ui-sweep.png")  # the README's picture

        # 3. A child's page, opened from the table: its name, parent, params and metrics.
        child = children[0]
        click(d, run_links(d, child.info.run_id)[0])
        text = wait_for_text(d, child.info.run_name, "Parent run", "optimizer.lr", "final_test_mse")
        assert parent.info.run_name[:40] in text
        assert f"optimizer.lr\n{child.data.params['optimizer.lr']}" in text
        assert f"final_test_mse\n{child.data.metrics['final_test_mse']!r}" in text
        assert not assistant_open(d)
        step("run")
        # ... and its charts: the "Model metrics" tab draws one chart per logged metric.
        click(d, d.find_element(By.XPATH, '//*[@role="tab"][.//text()="Model metrics"]'))
        wait_for_text(d, "loss", "train_mse")  # the loss section leads (tests/test_ui_metrics.py)
        WebDriverWait(d, WAIT_S).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot, canvas, svg.main-svg")
        )
        step("run-charts")

        # 4. MLflow's comparison of the two children: params side by side.
        ids = ",".join(f'"{r.info.run_id}"' for r in children)
        d.get(f'{url}/#/compare-runs?runs=[{ids}]&experiments=["{exp_id}"]')
        text = wait_for_text(d, "Comparing 2 Runs", *(r.info.run_name for r in children))
        lrs = " ".join(r.data.params["optimizer.lr"] for r in children)
        assert f"optimizer.lr {lrs}" in text
        assert "optimizer.name adam sgd" in text
        step("compare")

        # 5. The sweep's overlay of its children's curves, in the parent's artifacts.
        d.get(f"{url}/#/experiments/{exp_id}/runs/{parent.info.run_id}/artifacts/plots/overlay.svg")
        wait_for_text(d, "overlay.svg")
        wait_for_image(d, "the parent's plots/overlay.svg")
        assert not assistant_open(d)
        step("overlay")

        # 6. A child's loss curve (a fresh page load: a change of the address's #fragment alone
        # kept the parent's artifact tree, which has no loss_curve.svg).
        d.get("about:blank")
        d.get(
            f"{url}/#/experiments/{exp_id}/runs/{child.info.run_id}/artifacts/plots/loss_curve.svg"
        )
        wait_for_text(d, "loss_curve.svg")
        wait_for_image(d, "a child's plots/loss_curve.svg")
        assert not assistant_open(d)
        step("loss-curve")
