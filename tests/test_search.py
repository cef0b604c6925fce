"""Hyperparameter search: `python -m lrexp.train -m hparams_search=lr_search` (Optuna, TPE).

The sweeps run as the user runs them, as subprocesses with real Hydra, Optuna and an MLflow SQLite
store of their own; they start together in one module fixture (each is mostly one core's work).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hydra_plugins.lrexp_optuna import _space
from hydra_plugins.lrexp_optuna._space import SearchSpaceError

N_TRIALS = 5
PRESET_FILE = files("lrexp.conf") / "hparams_search" / "lr_search.yaml"


SMALL = ["train.epochs=2", "tracking.log_model=false", "hydra.sweep.dir=multirun"]
SEARCH = ["-m", "hparams_search=lr_search", *SMALL]
FULL = [*SEARCH, f"hydra.sweeper.n_trials={N_TRIALS}"]
SWEEPS = {
    "first": [*FULL, "hydra.sweeper.seed=7"],
    "again": [*FULL, "hydra.sweeper.seed=7", "tracking.enabled=false"],
    # lrexp rejects momentum >= 1: every job fails, and returns NaN
    "failing": [*SEARCH, "hydra.sweeper.n_trials=2", "optimizer.momentum=interval(1.0, 2.0)"],
    # every lr far above the stable one: each job diverges (its run FAILED, its value inf)
    "diverging": [*SEARCH, "hydra.sweeper.n_trials=2", "optimizer.lr=interval(5.0, 10.0)"],
    # a searched key that the optimizer does not have
    "unknown_key": [*SEARCH, "tracking.enabled=false", "optimizer.lrr=interval(0.1, 0.2)"],
    # sgd has no momentum, which the preset searches
    "conflict": [*SEARCH, "tracking.enabled=false", "optimizer=choice(momentum, sgd)"],
}


@dataclass
class Sweep:
    cwd: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.cwd / 'mlflow.db'}"

    def runs(self) -> list:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        exp = client.get_experiment_by_name("lrexp")
        return client.search_runs([exp.experiment_id], max_results=1000)

    def children(self) -> list:
        """The child runs, in job order."""
        kids = [r for r in self.runs() if "mlflow.parentRunId" in r.data.tags]
        return sorted(kids, key=lambda r: int(r.data.tags["lrexp.job_num"]))

    def trials(self) -> list[dict[str, str]]:
        """Each job's sampled values, in job order, from its overrides in Hydra's job directory."""
        found = (self.cwd / "multirun").glob("*/.hydra/overrides.yaml")
        jobs = sorted(found, key=lambda p: int(p.parts[-3]))
        searched = declared_space().distributions
        overrides = [dict(o.split("=", 1) for o in OmegaConf.load(p)) for p in jobs]
        return [{k: v for k, v in o.items() if k in searched} for o in overrides]

    def results(self) -> dict:
        return OmegaConf.to_container(
            OmegaConf.load(self.cwd / "multirun/optimization_results.yaml")
        )


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Sweep]:
    """Run the sweeps of SWEEPS at once, each in a directory of its own, with its own store."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    started = {}
    for name, overrides in SWEEPS.items():
        cwd = tmp_path_factory.mktemp(name)
        command = [
            sys.executable,
            "-m",
            "lrexp.train",
            *overrides,
            "tracking.uri=sqlite:///mlflow.db",
        ]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        started[name] = cwd, subprocess.Popen(command, cwd=cwd, env=env, text=True, **pipes)
    try:
        return {name: Sweep(cwd, *finish(proc)) for name, (cwd, proc) in started.items()}
    finally:
        for _, proc in started.values():
            if proc.poll() is None:
                proc.kill()


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def declared_space() -> _space.Space:
    params = OmegaConf.load(PRESET_FILE).hydra.sweeper.params
    return _space.parse([f"{k}={v}" for k, v in params.items()])


def test_every_trial_is_a_child_run_of_one_parent(sweeps):
    sweep = sweeps["first"]
    assert sweep.returncode == 0, sweep.stderr
    runs = sweep.runs()
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["lrexp.sweep"] == "true"
    children = sweep.children()
    assert len(children) == len(runs) - 1 == N_TRIALS
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert [c.data.tags["lrexp.job_num"] for c in children] == [str(i) for i in range(N_TRIALS)]
    assert all(c.info.status == "FINISHED" for c in children)


def test_sampled_values_lie_inside_the_declared_ranges(sweeps):
    space = declared_space().distributions
    children = sweeps["first"].children()
    for c in children:
        p = c.data.params
        assert p["optimizer.name"] in space["optimizer"].choices
        for key in ("optimizer.lr", "optimizer.momentum"):
            assert space[key].low <= float(p[key]) <= space[key].high, (key, p[key])
    # the sampler spreads the trials: no two share a learning rate
    assert len({c.data.params["optimizer.lr"] for c in children}) == N_TRIALS


def test_same_seed_samples_the_same_trials(sweeps):
    first, again = sweeps["first"], sweeps["again"]
    assert again.returncode == 0, again.stderr
    assert first.trials() == again.trials()
    assert len(first.trials()) == N_TRIALS
    # what Hydra's job directories say the trials were is what the child runs recorded
    for c, sampled in zip(first.children(), first.trials(), strict=True):
        assert sampled.keys() == {"optimizer", "optimizer.lr", "optimizer.momentum"}
        assert float(sampled["optimizer.lr"]) == float(c.data.params["optimizer.lr"])
        assert sampled["optimizer"] == c.data.params["optimizer.name"]


def test_sweeper_minimizes_the_test_mse_of_the_child_runs(sweeps):
    sweep = sweeps["first"]
    results = sweep.results()
    mse = {
        int(c.data.tags["lrexp.job_num"]): c.data.metrics["final_test_mse"]
        for c in sweep.children()
    }
    best_job = min(mse, key=mse.get)
    assert results["direction"] == "minimize"
    assert results["best_value"] == pytest.approx(mse[best_job], rel=1e-12)
    assert results["best_trial"] == best_job  # trial n is job n
    best = sweep.children()[best_job].data.params
    assert float(best["optimizer.lr"]) == results["best_params"]["optimizer.lr"]
    assert (
        f"best value {results['best_value']:.6g} at trial {best_job}" in sweep.stdout + sweep.stderr
    )


def test_failed_trials_are_recorded_and_the_search_goes_on(sweeps):
    sweep = sweeps["failing"]
    assert sweep.returncode == 0, sweep.stderr
    children = sweep.children()
    assert len(children) == 2 and all(c.info.status == "FAILED" for c in children)
    assert all("optimizer.momentum" in c.data.tags["lrexp.failure_reason"] for c in children)
    results = sweep.results()
    assert results["n_failed"] == 2 and results["best_value"] is None


def test_diverged_trials_count_as_failed_as_the_sweeps_summary_counts_them(sweeps):
    sweep = sweeps["diverging"]
    assert sweep.returncode == 0, sweep.stderr
    children = sweep.children()
    assert len(children) == 2 and all(c.info.status == "FAILED" for c in children)
    assert "2 failed" in sweep.stdout  # the sweep's summary
    results = sweep.results()
    assert results["n_failed"] == 2 and results["best_value"] is None


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("unknown_key", "Key 'lrr' not in 'Momentum'"),
        ("conflict", "Key 'momentum' not in 'Sgd'"),
    ],
)
def test_search_space_that_does_not_compose_fails_before_any_trial(sweeps, sweep, message):
    s = sweeps[sweep]
    assert s.returncode == 1
    assert "lrexp_optuna: bad search space:" in s.stderr and message in s.stderr
    assert "Traceback" not in s.stderr
    assert "Launching" not in s.stderr + s.stdout


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("optimizer.lr=interval(0.1, 0.001)", "needs finite bounds low < high"),
        ("optimizer.lr=tag(log, interval(0, 0.1))", "a log interval needs low > 0"),
        ("optimizer.lr=tag(lgo, interval(1e-4, 0.1))", "unknown tag ['lgo']"),
        ("optimizer=tag(log, choice(sgd, adam))", "applies to interval(low, high) only"),
        ("optimizer.lr=interval(0.001", "not a Hydra override"),
        ("train.batch_size=range(10, 5)", "the range is empty"),
        ("optimizer=choice(sgd, sgd)", "lists a value twice"),
        ("train.epochs=3", "nothing to search"),
    ],
)
def test_bad_search_space_gives_a_clear_error(entry, message):
    with pytest.raises(SearchSpaceError) as e:
        _space.parse([entry])
    assert str(e.value).startswith("lrexp_optuna: bad search space: ")
    assert message in str(e.value)


def test_space_reads_hydra_sweep_syntax():
    space = _space.parse(
        [
            "optimizer.lr=tag(log, interval(1e-4, 0.1))",
            "train.batch_size=int(interval(8, 64))",
            "train.epochs=range(2, 11, 4)",
            "optimizer=sgd,adam",
            "train.seed=3",
            "optimizer.lr=interval(0.01, 0.02)",  # a later entry replaces an earlier one
        ]
    )
    d = space.distributions
    assert (d["optimizer.lr"].low, d["optimizer.lr"].high, d["optimizer.lr"].log) == (
        0.01,
        0.02,
        False,
    )
    assert (d["train.batch_size"].low, d["train.batch_size"].high) == (8, 64)
    assert (d["train.epochs"].low, d["train.epochs"].high, d["train.epochs"].step) == (2, 10, 4)
    assert d["optimizer"].choices == ("sgd", "adam")
    assert space.fixed == ["train.seed=3"]
    lr = 0.1 + 0.2  # a float that needs all its digits
    overrides = space.overrides(
        {"optimizer.lr": lr, "train.batch_size": 8, "train.epochs": 6, "optimizer": "adam"}
    )
    assert overrides == [
        "train.batch_size=8",
        "train.epochs=6",
        "optimizer=adam",
        f"optimizer.lr={lr!r}",
        "train.seed=3",
    ]
    assert float(overrides[3].split("=")[1]) == lr
