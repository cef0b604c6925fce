"""A run on Parquet data larger than memory: one streamed pass (:mod:`lrexp.core.stream`) instead
of loading the rows, then full-batch training from the pass's statistics.

:class:`Streamed` is a :class:`~lrexp.pipeline.prepare.Prepared` whose splits are Gram matrices:
``arrays`` hands the loop standardized statistics, ``evaluate`` scores from the sums, and its
``dataset`` holds only the first rows (the model's input example, the plots' points).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import lrexp.pipeline.outcome as outcome
from lrexp import config
from lrexp.config import Config
from lrexp.core import (
    data,
    diagnostics,
    fit,
    gram,
    layouts,
    model,
    optim,
    results,
    row_cache,
    stream,
)
from lrexp.pipeline.prepared import Prepared, _once, checked, log, loop_spec

MODES = ("auto", "true", "false")
MEMORY_SHARE = 8  # auto streams data whose float64 columns pass 1/8 of the machine's memory
PROGRESS_S = 3.0  # seconds between progress lines of the pass
CALL_ROWS = 1 << 20  # mini-batches: rows gathered from the row file for one compiled call, at most


@dataclass(frozen=True)
class Streamed(Prepared):
    """A prepared run over streamed data: its splits as float64 Gram matrices of [1, z − shift]."""

    grams: list[tuple[np.ndarray, np.ndarray]]  # (train, test) of each split
    sums: stream.Sums
    rows: int  # rows trained and tested on (after any dropped)
    train_rows: np.ndarray | None  # mini-batches: the training rows − shift, memory-mapped

    def sizes(self, i: int) -> tuple[int, int]:
        return tuple(round(float(g[0, 0])) for g in self.grams[i])

    @property
    def n_rows(self) -> int:
        return self.rows

    def stats(self, i: int) -> tuple[model.Stats, model.Stats]:
        """Split ``i``'s train and test statistics in the loop's standardized units."""
        st, shift = self.scalers[i], self.sums.shift
        mean, scale = np.append(st.mean, st.y_mean), np.append(st.scale, st.y_scale)
        out = []
        for g in self.grams[i]:
            G = jnp.asarray(gram.affine_gram(g, shift, mean, scale), jnp.float64)
            out.append(model.Stats(gram=G[:-1, :-1], xty=G[:-1, -1], yty=G[-1, -1], n=G[0, 0]))
        return out[0], out[1]

    def arrays(self, i: int):
        """Split ``i`` as the loop takes it: (train statistics, None, test statistics, None)."""
        train, test = self.stats(i)
        if self.train_rows is None:
            return train, None, test, None
        st = self.scalers[i]
        center = np.append(st.mean, st.y_mean) - self.sums.shift
        host = layouts.HostRows(self.train_rows, center, np.append(st.scale, st.y_scale), train)
        return host, None, test, None

    def divergence_advice(self) -> str:
        st, d = self.scalers[0], self.cfg.data
        mean, scale = np.append(st.mean, st.y_mean), np.append(st.scale, st.y_scale)
        largest = float(np.max(np.abs(np.stack([self.sums.low, self.sums.high]) - mean) / scale))
        return outcome.advice(
            self.checks, lr=self.cfg.optimizer.lr, dtype=self.cfg.train.dtype, largest=largest,
            rows=self.sizes(0)[0], standardized=d.standardize and d.standardize_target,
            mini_batches=self.spec.batch_size is not None,
        )  # fmt: skip

    def evaluate(self, fits: list[fit.FitResult]) -> list[results.FoldResult]:
        """Score each split's fit in original units from its sums."""
        return [self._score(i, f) for i, f in enumerate(fits)]

    def _score(self, i: int, f: fit.FitResult) -> results.FoldResult:
        st, shift, (train, test) = self.scalers[i], self.sums.shift, self.grams[i]
        mean, std = gram.moments(train, shift)  # θ* on a standardized target, as in memory
        best = data.Standardizer(st.mean, st.scale, mean[-1], std[-1] if std[-1] > 0 else 1.0)
        scale = np.append(best.scale, best.y_scale)
        theta_star = best.to_original(
            gram.solve(gram.affine_gram(train, shift, np.append(best.mean, best.y_mean), scale))
        )
        theta = st.to_original(f.theta)
        standardized = gram.affine_gram(train, shift, np.append(st.mean, 0.0), scale)
        lam_max, lam_min = gram.eigen_range(standardized)
        n_train, n_test = self.sizes(i)
        return results.FoldResult(
            fit=f._replace(history=results.in_target_units(f.history, st)),
            theta=theta,
            theta_star=theta_star,
            trajectory=st.to_original(f.history.theta),
            train=gram.scores(theta, train, shift),
            test=gram.scores(theta, test, shift),
            optimum=gram.scores(theta_star, train, shift),
            condition_number=float(np.sqrt(lam_max / lam_min)) if lam_min > 0 else float("inf"),
            n_train=n_train,
            n_test=n_test,
        )


def streams(cfg: Config, base_dir: Path) -> bool:
    """Whether this run streams its data (``data.stream``): refuse what streaming cannot do."""
    d = cfg.data
    if not isinstance(d, config.FileData):
        return False
    mode = str(d.stream).lower()
    if mode not in MODES:
        raise config.ConfigError("data.stream", d.stream, f"must be one of: {', '.join(MODES)}")
    path = base_dir / d.path
    parquet = path.is_dir() or (d.format or data_format(path)) == "parquet"
    if path.is_dir() and mode == "false":
        raise config.ConfigError(
            "data.path", d.path, "is a directory: its Parquet files are read streamed only "
            "(data.stream=auto or true)",
        )  # fmt: skip
    if mode == "false" or (mode == "auto" and not parquet):
        return False
    if not parquet:
        raise config.ConfigError("data.stream", d.stream, f"true streams Parquet only: {path.name}")
    full_batch = cfg.train.batch_size is None or optim.OPTIMIZERS[cfg.optimizer.name].line_search
    if mode == "auto" and not path.is_dir():
        try:
            source, _ = data.stream_file(path, target=d.target, features=d.features)
        except data.DataError:  # text columns, a damaged file: the loader says what is wrong
            return False
        if source.rows * len(source.columns) * 8 * MEMORY_SHARE <= _memory():
            return False
    if not full_batch and cfg.train.shuffle_block > 1:
        raise config.ConfigError(
            "train.shuffle_block", cfg.train.shuffle_block, "must be 1 with streamed data "
            "(data.stream=true, or a directory): its mini-batches are gathered row by row",
        )  # fmt: skip
    if cfg.train.folds is not None:
        raise config.ConfigError(
            "train.folds", cfg.train.folds, "must be null with streamed data: a held-out test "
            "set only (train.test_fraction)",
        )  # fmt: skip
    return True


def data_format(path: Path) -> str | None:
    from lrexp.core import tables  # pyarrow: imported only for data read from a file

    return tables.format_of(path)


def _memory() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _progress(total: int):
    """A progress line on stderr every :data:`PROGRESS_S` seconds of the pass."""
    last = [0.0]

    def show(rows: int, nbytes: int, seconds: float) -> None:
        if seconds - last[0] >= PROGRESS_S or (rows >= total and last[0] > 0):
            last[0] = seconds
            share = f" ({100 * rows / total:.0f}%)" if total else ""
            speed = nbytes / 1e6 / max(seconds, 1e-9)
            line = f"lrexp: data pass: {rows:,} of {total:,} rows{share}, {speed:.0f} MB/s"
            print(line, file=sys.stderr, flush=True)

    return show


def prepare_streamed(cfg: Config, base_dir: Path, cache: dict) -> Streamed:
    """:func:`~lrexp.pipeline.prepare.prepare` for streamed data: one pass, then the checks."""
    d, t = cfg.data, cfg.train
    path = base_dir / d.path
    source, _ = data.stream_file(path, target=d.target, features=d.features)
    m = len(source.features)
    config.validate_sizes(cfg, n_rows=source.rows, n_features=m, n_train=source.rows)
    key = ("stream", asdict(d), t.seed, t.test_fraction, str(base_dir))
    started = time.perf_counter()
    _, done = _once(
        cache, key, lambda: data.stream_file(
            path, target=d.target, features=d.features, seed=t.seed,
            test_fraction=t.test_fraction, folds=None, dropna=d.dropna,
            on_batch=_progress(source.rows),
        ),
    )  # fmt: skip
    log.info("data pass: %d rows in %.1f s", source.rows, time.perf_counter() - started)
    sums = done.sums
    train, test = stream.split_grams(sums, 0, None)
    rows = round(float(train[0, 0] + test[0, 0]))
    n_train, n_test = round(float(train[0, 0])), round(float(test[0, 0]))
    config.validate_sizes(cfg, n_rows=rows, n_features=m, n_train=n_train)
    if n_test == 0:
        raise config.ConfigError("train.test_fraction", t.test_fraction, "leaves no test rows")
    if done.dropped:
        log.warning("data.dropna=true: left out %d of %d rows", done.dropped, rows)
    mean, std = gram.moments(train, sums.shift)
    names = tuple(source.features)
    target_key = ("data.target", d.target)
    st = data.standardizer_from(
        mean, std, names, features=d.standardize, target=d.standardize_target, key=target_key[0],
        value=target_key[1],
    )  # fmt: skip
    scale = np.append(st.scale, st.y_scale)
    lam_max, lam_min = gram.eigen_range(
        gram.affine_gram(train, sums.shift, np.append(st.mean, st.y_mean), scale)
    )
    spread = diagnostics.Spectrum(n_train, lam_max, lam_min)
    dataset = data.Dataset(
        X=done.sample[:, :-1], y=done.sample[:, -1], feature_names=names, target_name=d.target,
        name=path.stem, source=str(path.resolve()), dropped_rows=done.dropped,
    )  # fmt: skip
    parts = [(np.flatnonzero(done.sample_part == 0), np.flatnonzero(done.sample_part == 1))]
    base = _base(cfg, base_dir, dataset, parts, [st], spread, (rows, n_train), m)
    host = None
    if base["spec"].batch_size is not None:  # the training rows, once, to a memory-mapped file
        host = _once(cache, ("rows", *key), lambda: row_cache.train_rows(
            source, sums, seed=t.seed, test_fraction=t.test_fraction, dropna=d.dropna))  # fmt: skip
    return Streamed(**base, grams=[(train, test)], sums=sums, rows=rows, train_rows=host)


def _base(cfg, base_dir, dataset, parts, scalers, spread, sizes, m) -> dict:
    """The fields every prepared run has: the loop's shape (full batch from statistics), the
    checks, the hyperparameters and the title; ``sizes``: (rows, training rows)."""
    rows, n_train = sizes
    spec = loop_spec(cfg, n_train, m)
    if spec.batch_size is None:
        spec = fit.chunked(replace(spec, stats=True), n_train, m)
    else:  # one epoch a call at most, and at most CALL_ROWS rows gathered on the host for it
        spe = spec.steps_per_epoch(n_train)
        split = min(spe, max(spec.split, -(-n_train // CALL_ROWS)))
        spec = replace(spec, chunk=1, split=split)
    checks, hyper, title = checked(
        cfg, spread, spec, scalers[0], name=dataset.name, rows=rows, m=m, how=", streamed"
    )
    k_shuffle = jax.random.split(jax.random.key(cfg.train.seed), 3)[2]
    return dict(
        cfg=cfg, base_dir=base_dir, dataset=dataset, parts=parts, scalers=scalers, spec=spec,
        hyper=hyper, shuffle_key=k_shuffle, title=title, checks=checks,
    )  # fmt: skip
