"""Limits of the machine a run must fit: counts the training loop holds in int32, and the memory
a run will hold, estimated from its config and data size before anything is made.

The estimate, in bytes (n rows, M features, k splits, E history rows a split, b the dtype's
bytes; each term named by the key that sets it):

    data      8·n·(M+1) · COPIES        the table, a split's standardized copy, the loop's layout
    splits    8·n · k                   each split's train and test row indices
    history   8·E·(M+6) · k             a row per epoch (per step, full batch): 5 values and θ
    memory    3·memory_size·(M+1)·b · 2 L-BFGS's past steps, gradients and weights, and a copy

It is refused above :data:`SHARE` of the machine's memory (the smaller of the physical memory and
a cgroup's limit), so that a run that would exhaust it fails in one line before any run exists.
"""

from __future__ import annotations

import os
from pathlib import Path

INT32_MAX = 2**31 - 1  # the loop counts epochs and steps in int32 (chunk.State)
COPIES = 4
SHARE = 0.5
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory, or a smaller cgroup limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for name in _CGROUP_LIMITS:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def estimate(
    *, n_rows: int, n_features: int, splits: int, history_rows: int, memory_size: int, itemsize: int
) -> dict[str, int]:
    """The bytes a run holds, per term of the module's formula: data, splits, history, memory."""
    m = n_features
    return {
        "data": 8 * n_rows * (m + 1) * COPIES,
        "splits": 8 * n_rows * splits,
        "history": 8 * (history_rows + 1) * (m + 6) * splits,
        "memory": 3 * memory_size * (m + 1) * itemsize * 2,
    }


def gigabytes(n: float) -> str:
    """Bytes as GB: two significant digits below 10 (0.0012 GB, 3.2 GB), else whole (1200 GB)."""
    return f"{n / 1e9:.2g} GB" if n < 1e10 else f"{n / 1e9:.0f} GB"


def too_big(terms: dict[str, int], memory: int | None = None) -> tuple[str, str] | None:
    """(the largest term, the allowed text) when the terms' sum passes :data:`SHARE` of the
    machine's memory; None when the run fits."""
    memory = machine_memory() if memory is None else memory
    need = sum(terms.values())
    if need <= SHARE * memory:
        return None
    largest = max(terms, key=terms.__getitem__)
    return largest, (
        f"needs ~{gigabytes(need)} of memory, this machine has {gigabytes(memory)} "
        f"(a run may use {SHARE:.0%} of it)"
    )
