"""``python -m lrexp.compare --html``: one self-contained HTML file of real runs read back from a
real store: it parses, fetches nothing, and holds the leaderboard, the overlay, the landscape and
the params that matter. The oracle for the rows is what MLflow's own client reads back."""

from __future__ import annotations

import math
import re
import uuid
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from conftest import typed_config
from mlflow.tracking import MlflowClient

from lrexp import compare, pipeline
from lrexp.report import html

SMALL = ["train.epochs=10", "tracking.log_model=false", "optimizer=sgd"]
LRS = ("0.015", "0.002")  # sgd: one compiled program for both runs


class Page(HTMLParser):
    """Every start tag with its attributes, every end tag, the text of each table row."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[tuple[str, dict]] = []
        self.ends: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        self.ends.append(tag)
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def report(store_uri, tmp_path_factory):
    """Two finished runs in a fresh experiment, and the report of them."""
    base = tmp_path_factory.mktemp("html")
    name = f"test-{uuid.uuid4().hex[:12]}"
    MlflowClient(store_uri).create_experiment(name, artifact_location=str(base / "artifacts"))
    ids = []
    for lr in LRS:
        overrides = [f"tracking.uri={store_uri}", f"tracking.experiment={name}",
                     f"optimizer.lr={lr}", *SMALL]  # fmt: skip
        out = pipeline.run(typed_config(*overrides), base_dir=base, overrides=overrides)
        ids.append(out.run_id)
    path = base / "report.html"
    argv = ["--uri", store_uri, "--experiment", name, "--html", str(path),
            "--plot", str(base / "overlay.svg")]  # fmt: skip
    text = compare.compare(compare.parse_args(argv))
    return path.read_text(encoding="utf-8"), ids, text, store_uri


def test_report_parses_and_its_figures_are_well_formed_svg(report):
    doc, _, text, _ = report
    assert "HTML report" in text
    page = Page()
    page.feed(doc)
    page.close()
    tags = [t for t, _ in page.starts]
    for tag in ("html", "head", "body", "table", "svg"):
        assert tags.count(tag) == page.ends.count(tag), tag
    svgs = re.findall(r"<svg\b.*?</svg>", doc, flags=re.S)
    assert len(svgs) == 2  # the overlay and the landscape
    roots = [ET.fromstring(s) for s in svgs]
    paths = [e for e in roots[1].iter() if e.get("class") == "path"]
    assert len(paths) == len(LRS)


def test_report_references_nothing_outside_itself(report):
    doc = report[0]
    page = Page()
    page.feed(doc)
    for tag, attrs in page.starts:
        assert tag not in ("script", "link", "img", "iframe", "object"), tag
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert not re.match(r"^\s*(https?:)?//", value), (tag, key, value)
    assert "@import" not in doc and "url(http" not in doc


def test_report_holds_the_leaderboard_rows_best_first(report):
    doc, ids, _, uri = report
    page = Page()
    page.feed(doc)
    client = MlflowClient(uri)
    mse = {i: client.get_run(i).data.metrics["final_test_mse"] for i in ids}
    board = [row for row in page.rows if any(i in row for i in ids)]
    assert [next(i for i in ids if i in row) for row in board] == sorted(ids, key=mse.get)
    for row in board:
        run_id = next(i for i in ids if i in row)
        assert any(math.isclose(float(c), mse[run_id], rel_tol=1e-5) for c in row if _num(c))


def _num(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_params_that_matter_rank_the_param_that_moves_the_metric_first():
    # lr moves the best score tenfold; seed barely; the optimizer is shared
    params = [{"lr": lr, "seed": s, "opt": "sgd"} for lr in ("0.1", "0.01") for s in ("0", "1")]
    scores = [1.0, 1.1, 10.0, 10.5]
    matter = html.params_that_matter(params, scores)
    assert [m["param"] for m in matter] == ["lr", "seed"]
    assert matter[0]["spread"] == pytest.approx(10.0)
    assert matter[1]["spread"] == pytest.approx(1.1)
    assert matter[0]["values"] == [("0.1", 1.0, 2), ("0.01", 10.0, 2)]
