"""Mini-batches from streamed data: the training rows written once to a float32 ``.npy`` file,
memory-mapped, and each compiled call's batches gathered from it on the host.

The file holds the rows [x, y] − shift (the pass's shift: values near zero keep float32's digits)
of the training part, in the files' order. It is made by one more pass and kept under
``$LREXP_CACHE`` (default ``~/.cache/lrexp``), named by a digest of the files (path, size,
modification time and Parquet footer, which holds every row group's offsets and statistics), the
columns, the split (seed, test fraction) and ``dropna``: a second run on the same data reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lrexp.core import stream


def cache_dir() -> Path:
    """Where row files are kept: ``$LREXP_CACHE``, else ``~/.cache/lrexp``."""
    return Path(os.environ.get("LREXP_CACHE") or Path.home() / ".cache" / "lrexp")


def digest(source: stream.Source, **split) -> str:
    """A digest of the files (path, size, mtime, footer), the columns and ``split``'s values."""
    h = hashlib.sha256(json.dumps([source.columns, sorted(split.items())]).encode())
    for f in source.files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        h.update(repr(pq.ParquetFile(f, **stream.READ).metadata.to_dict()).encode())
    return h.hexdigest()[:32]


def train_rows(
    source: stream.Source, sums: stream.Sums, *, seed: int, test_fraction: float, dropna: bool
) -> np.ndarray:
    """The training rows, [x, y] − shift in float32, memory-mapped from the cache (made once)."""
    key = digest(source, seed=seed, test_fraction=test_fraction, dropna=dropna)
    path = cache_dir() / f"rows-{key}-{sums.shift.tobytes().hex()[:16]}.npy"
    n = round(float(sums.n[0]))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        out = np.lib.format.open_memmap(partial, "w+", np.float32, (n, len(source.columns)))
        row0, at = 0, 0
        for Z in stream.batches(source):
            rows = np.arange(row0, row0 + len(Z))
            row0 += len(Z)
            keep = stream.assign(rows, seed, test_fraction=test_fraction, folds=None) == 0
            if dropna:
                keep &= np.isfinite(Z).all(axis=1)
            block = Z[keep] - sums.shift
            out[at : at + len(block)] = block
            at += len(block)
        out.flush()
        del out
        if at != n:
            partial.unlink()
            raise ValueError(f"{source.files[0]}: {at} training rows on the second pass, not {n}")
        partial.replace(path)  # whole, or not there: a run killed while writing leaves no file
    return np.load(path, mmap_mode="r")
