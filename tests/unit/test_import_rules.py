"""The package layering that ARCHITECTURE.md draws, kept by reading the imports.

Each package's ``__init__.py`` says what it may import; these tests fail when
a module reaches past that, when module-level imports form a cycle, or when
``gunicorn.conf.py`` (imported unpatched by the gunicorn master) pulls in
anything beyond the standard library and the two settings modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("app", "board", "jobs", "server", "streaming")
STDLIB = frozenset(sys.stdlib_module_names)

# package -> project packages (prefixes) its modules may import.
ALLOWED: dict[str, tuple[str, ...]] = {
    # Topic patterns are the vocabulary of a token's grant (server.tokens):
    # the one piece of streaming that server uses, and a pure module.
    "server": ("server", "streaming.core.topics"),
    "streaming.core": ("streaming.core", "server"),
    "streaming.scaleout": ("streaming.scaleout", "streaming.core", "server"),
    "streaming.ops": ("streaming.ops", "streaming.scaleout", "streaming.core", "server"),
    "streaming.transport": ("streaming", "server"),
    "jobs": ("jobs", "server", "streaming"),
    "board": ("board",),
}
# Third-party packages each layer may use (beyond the standard library).
THIRD_PARTY: dict[str, frozenset[str]] = {
    "server": frozenset({"flask", "werkzeug", "pythonjsonlogger", "gunicorn", "jwt", "cryptography", "click"}),
    "streaming.core": frozenset({"gevent"}),
    "streaming.scaleout": frozenset({"redis"}),
    "streaming.ops": frozenset({"flask", "prometheus_client", "gevent"}),
    "streaming.transport": frozenset({"flask", "werkzeug", "gevent", "flask_sock", "simple_websocket", "wsproto"}),
    "jobs": frozenset({"flask", "werkzeug", "redis", "prometheus_client", "gevent"}),
    "board": frozenset({"flask"}),
    "streaming": frozenset({"flask"}),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> Iterator[tuple[str, Path]]:
    for package in PROJECT[1:]:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield module_name(path), path


def imports(path: Path, module_level_only: bool = False) -> Iterator[str]:
    """Absolute names this file imports (``from a import b`` yields ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.AST] = list(tree.body) if module_level_only else list(ast.walk(tree))
    for node in nodes:
        if module_level_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def layer_of(module: str) -> str:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return module.split(".")[0]


def is_public_streaming(name: str, layer: str) -> bool:
    """``streaming`` itself and its public names are open to jobs and to streaming's own layers."""
    import streaming

    package, _, attr = name.partition(".")
    public = attr in ("", "EXTENSION", *streaming.__all__)
    return package == "streaming" and public and layer.startswith(("streaming", "jobs"))


def test_every_module_imports_only_what_its_package_allows() -> None:
    wrong: list[str] = []
    for module, path in project_modules():
        layer = layer_of(module)
        if module == "streaming":
            allowed: tuple[str, ...] = ("streaming",)  # the public surface, loaded lazily
        else:
            allowed = ALLOWED[layer]
        for name in imports(path):
            top = name.split(".")[0]
            if top in PROJECT:
                if not is_public_streaming(name, layer) and not any(
                    name == a or name.startswith(a + ".") for a in allowed
                ):
                    wrong.append(f"{module} imports {name}")
            elif top not in STDLIB and top != "__future__" and top not in THIRD_PARTY[layer]:
                wrong.append(f"{module} imports third-party {name}")
    assert wrong == []


def test_jobs_uses_only_the_public_surface_of_streaming() -> None:
    import streaming

    wrong = []
    for module, path in project_modules():
        if not module.startswith("jobs"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streaming"):
                if node.module != "streaming":
                    wrong.append(f"{module}: from {node.module} import ...")
                wrong.extend(
                    f"{module}: streaming.{a.name} is not public" for a in node.names if a.name not in streaming.__all__
                )
            elif isinstance(node, ast.Import):
                wrong.extend(f"{module}: import {a.name}" for a in node.names if a.name.startswith("streaming."))
    assert wrong == []


def test_the_public_surface_resolves() -> None:
    import streaming

    for name in streaming.__all__:
        assert getattr(streaming, name) is not None, name


def test_module_level_imports_form_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    known = {m for m, _ in project_modules()}
    for module, path in project_modules():
        edges = set()
        for name in imports(path, module_level_only=True):
            # ``from pkg import sub`` names a module when ``pkg.sub`` is one.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.add(name)
        graph[module] = edges

    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle.extend([*trail, node, nxt])
                return True
            if nxt not in state and visit(nxt, [*trail, node]):
                return True
        state[node] = 2
        return False

    for node in graph:
        if node not in state and visit(node, []):
            break
    assert cycle == []


@pytest.mark.parametrize(
    "module", ["server.settings", "server.parsers", "server.logs", "server.background", "streaming.core.reasons"]
)
def test_master_side_modules_are_standard_library_only(module: str) -> None:
    path = ROOT / (module.replace(".", "/") + ".py")
    outside = {
        name for name in imports(path, module_level_only=True) if name.split(".")[0] not in STDLIB | {"__future__"}
    }
    assert {n for n in outside if n.split(".")[0] not in PROJECT} == set()


GUNICORN_MASTER = """
import runpy, sys
before = set(sys.modules)
conf = runpy.run_path("gunicorn.conf.py")
class Arbiter:  # what gunicorn hands the hooks (the table is kept on it)
    pass
conf["_ensure_table"](Arbiter())  # what on_starting does in the master with several workers
new = {m.split(".")[0] for m in set(sys.modules) - before}
print(sorted(n for n in new if n not in sys.stdlib_module_names))
print(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("server", "streaming")))
"""


def test_gunicorn_conf_imports_the_standard_library_and_settings_only(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "JOBS_DB": str(tmp_path / "jobs.db"), "PYTHONPATH": str(ROOT)}
    env |= {"WEB_CONCURRENCY": "2", "REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = subprocess.run(
        [sys.executable, "-c", GUNICORN_MASTER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    third_party, ours = proc.stdout.strip().splitlines()
    assert set(ast.literal_eval(third_party)) <= {"server", "streaming"}
    assert set(ast.literal_eval(ours)) <= {
        "server",
        "server.settings",
        "server.parsers",
        "server.redis_url",
        "server.logs",
        "streaming",
        "streaming.scaleout",
        "streaming.scaleout.instance",
        "streaming.core",
        "streaming.core.reasons",
    }
