"""A leaderboard as terminal text: fitted to the terminal's width, failed runs apart."""

from __future__ import annotations

import shutil

import pandas as pd


def text_table(frame: pd.DataFrame, width: int | None = None) -> str:
    """The table as text: numbers to 6 significant digits, run names aligned left (cut to a third
    of the line); where it is wider than ``width`` (default: the terminal's), in blocks of
    columns one under the other, each led by the run's name."""
    width = width or shutil.get_terminal_size().columns
    names = [cut(str(n), max(24, width // 3)) for n in frame["run"]]
    frame = frame.assign(run=names)
    whole = _render(frame)
    if max(map(len, whole.splitlines())) <= width:
        return whole
    blocks, rest = [], [c for c in frame.columns if c != "run"]
    while rest:
        n = 1
        while n < len(rest) and _fits(frame[["run", *rest[: n + 1]]], width):
            n += 1
        block = frame[["run", *rest[:n]]]
        if n == 1 and not _fits(block, width):  # one column too wide on its own: cut its values
            room = max(8, width - max(3, *(len(s) for s in block["run"])) - 2)
            block = block.assign(**{rest[0]: [cut(str(v), room) for v in block[rest[0]]]})
        blocks.append(_render(block))
        rest = rest[n:]
    return "\n\n".join(blocks)


def _render(frame: pd.DataFrame) -> str:
    name_width = max(3, *(len(n) for n in frame["run"]))
    run = "run".ljust(name_width)
    return frame.rename(columns={"run": run}).to_string(
        index=False,
        float_format=lambda v: f"{v:.6g}",
        na_rep="—",
        formatters={run: lambda s: f"{s:<{name_width}}"},
    )


def _fits(frame: pd.DataFrame, width: int) -> bool:
    return max(map(len, _render(frame).splitlines())) <= width


def cut(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters, ending in … where it was longer."""
    return text if len(text) <= n else text[: n - 1] + "…"


def left_out_lines(left_out: list[tuple[dict, str]], width: int | None = None) -> list[str]:
    """The failed and diverged runs (``--all`` ranks them): status, name and id on one line, the
    reason (its first line) under it, each cut to ``width`` (default: the terminal's)."""
    if not left_out:
        return []
    width = width or shutil.get_terminal_size().columns
    out = [f"left out: {len(left_out)} failed or diverged runs (--all ranks and plots them too)"]
    for r, why in left_out:
        name = cut(r["name"], max(12, width - 46))
        out.append(f"  {r['status']:<8} {r['run_id']}  {name}")
        out.append(f"      {cut(why.splitlines()[0] if why else '', max(20, width - 6))}")
    return out
