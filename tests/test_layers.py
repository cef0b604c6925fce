"""The shape of the code: imports point one way, entry → sweeps → pipeline → config → tracking →
report → core, and each library is imported only where it belongs.

Read from the source with ``ast`` (every import, lazy ones inside functions included; those under
``if TYPE_CHECKING:`` aside), so a new module is checked the moment it exists.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first: a module may import its own layer and the layers below it, never one above.
LAYERS = [
    ("base", ("lrexp",)),  # the package itself: process-wide settings (x64, quiet loggers)
    ("core", ("lrexp.core",)),  # maths and data: plain values in, arrays out
    ("report", ("lrexp.report",)),  # figures and the terminal summary, from plain values
    ("tracking", ("lrexp.tracking",)),  # MLflow: the training side, the tracking process
    ("config", ("lrexp.config",)),  # Hydra's schemas, the value checks
    ("pipeline", ("lrexp.pipeline",)),  # one run: prepare → train → score → record
    ("sweeps", ("lrexp.sweeps",)),  # multiruns: parent runs, the batched launcher's work
    (
        "entry",
        ("lrexp.train", "lrexp.compare", "lrexp.reproduce", "lrexp.runs", "lrexp.preflight"),
    ),
    ("plugins", ("hydra_plugins",)),  # Hydra's plugins: the vmap launcher, the Optuna sweeper
]
# Third-party libraries and where they may be imported.
HYDRA = ("lrexp.config", "lrexp.sweeps", "lrexp.train", "lrexp.preflight", "hydra_plugins")
ALLOWED = {"mlflow": ("lrexp.tracking",), "hydra": HYDRA, "omegaconf": HYDRA}
NO_JAX = ("lrexp.tracking", "lrexp.report")  # the tracking process never imports JAX


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        if "conf" in rel.parts:
            continue
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports (absolute names), except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


MODULES = _modules()
GRAPH = {m: _imports(p, m) for m, p in MODULES.items()}


def _layer(module: str) -> int:
    best = (-1, -1)  # (length of the longest matching prefix, layer)
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), i))
    assert best[1] >= 0, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def _ours(name: str) -> str | None:
    """The project module an imported name refers to (a module, or a name inside one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    """Rule: a module imports only its own layer and those below (entry → … → core)."""
    here = _layer(module)
    upward = sorted(
        f"{target} ({LAYERS[_layer(target)][0]})"
        for target in {_ours(n) for n in GRAPH[module]} - {None, module}
        if _layer(target) > here
    )
    assert not upward, f"{module} ({LAYERS[here][0]}) imports a higher layer: {upward}"


def test_no_import_cycles():
    """Rule: no two modules import each other, directly or through others."""
    edges = {m: {t for n in GRAPH[m] if (t := _ours(n)) not in (None, m)} for m in MODULES}
    # A package's __init__ re-exporting its modules is no cycle with them.
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycle = [*path[path.index(t) :], t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("library", sorted(ALLOWED))
def test_each_library_is_imported_only_in_its_layer(library):
    """Rule: MLflow only in the tracking layer; Hydra and OmegaConf only in config, the entry
    points and the sweeps (Hydra's own interface)."""
    wrong = sorted(
        m
        for m, names in GRAPH.items()
        if any(n == library or n.startswith(library + ".") for n in names)
        and not any(m == p or m.startswith(p + ".") for p in ALLOWED[library])
    )
    assert not wrong, f"{library} imported outside {ALLOWED[library]}: {wrong}"


def test_the_tracking_layer_never_imports_jax():
    """Rule: the tracking process imports MLflow, never JAX (its start-up overlaps JAX's)."""
    wrong = sorted(
        m
        for m, names in GRAPH.items()
        if m.startswith(NO_JAX)
        and any(n.split(".")[0] in ("jax", "optax") or _is_jax_module(n) for n in names)
    )
    assert not wrong, f"modules of {NO_JAX} import JAX, or a module that does: {wrong}"


def _is_jax_module(name: str) -> bool:
    target = _ours(name)
    return target is not None and any(
        n.split(".")[0] in ("jax", "optax") for n in GRAPH.get(target, ())
    )


def test_the_tracking_process_runs_a_call_without_importing_jax(tmp_path):
    """What the rule is for, checked for real: the tracking process's modules and a call to the
    store leave JAX unimported."""
    code = (
        "import sys\n"
        "from lrexp.tracking import local, server\n"
        f"uri = 'sqlite:///{tmp_path / 'm.db'}'\n"
        "local.run_status(uri, local.create_run(uri, '0', 'x', {}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'optax')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
