"""The web process must never load torch (DESIGN.md): checked in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys, django
django.setup()
import webapp.asgi, webapp.urls, webapp.api.views, webapp.runs.views, webapp.runs.stream, webapp.projects.views
from django.urls import get_resolver
get_resolver().url_patterns  # imports every view module the URLconf names
heavy = sorted(m for m in ("torch", "accelerate", "transformers") if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


def test_web_modules_do_not_import_torch(tmp_path):
    env = {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "RUNWRIGHT_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.strip() == "HEAVY:", out


# --- dependencies run one way: modelcore <- webapp <- workers ----------------------------

WEBAPP = ROOT / "webapp"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _web_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(WEBAPP.rglob("*.py")) if "migrations" not in p.parts}


def _imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file, those inside functions included.

    ``from a.b import c`` yields ``a.b.c`` (``c`` may be a module) and ``a.b``; a string
    handed to ``importlib.import_module`` counts as an import too.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_no_web_module_imports_workers():
    """The web enqueues by task name (webapp.enqueue); importing workers, even lazily, is a cycle."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _web_modules().values()
        for line, name in _imported_names(path)
        if name == "workers" or name.startswith("workers.")
    ]
    assert offenders == [], "\n".join(offenders)


def test_the_import_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text(
        "def send():\n    from workers.tasks import launch_run\n\n"
        "def load():\n    importlib.import_module('workers.eval_jobs')\n"
    )
    assert [name for _, name in _imported_names(source)] == [
        "workers.tasks",
        "workers.tasks.launch_run",
        "workers.eval_jobs",
    ]


def _web_import_graph() -> dict[str, set[str]]:
    modules = _web_modules()
    return {
        name: {dep for _, dep in _imported_names(path) if dep in modules and dep != name}
        for name, path in modules.items()
    }


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (its modules in order, the first repeated at the end), or []."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_web_modules_import_each_other_without_a_cycle():
    """No circle between files, lazy imports included: services of one app never import each other back."""
    graph = _web_import_graph()
    services = [name for name in graph if name.endswith(".services")]
    assert {"webapp.accounts.services", "webapp.projects.services", "webapp.demo.services"} <= set(services)
    cycle = _find_cycle(graph)
    assert cycle == [], " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a.services": {"b.services"}, "b.services": {"c"}, "c": {"a.services"}, "d": set()}
    assert _find_cycle(graph) == ["a.services", "b.services", "c", "a.services"]
    assert _find_cycle({"a": {"b"}, "b": set()}) == []
