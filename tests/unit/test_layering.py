"""The layout's layers hold: protos → gen → core → db → one package per process → the launcher.
A package imports only the packages below it, and no process package imports another, so each
process loads only what it runs and core stays usable from anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROCESS_PACKAGES = ("scheduler_svc", "worker_svc", "monitor_svc", "api_gateway")
# Of the project's packages, those each one may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "gen": set(),
    "core": {"gen"},
    "db": {"core"},
    **{name: {"gen", "core", "db"} for name in PROCESS_PACKAGES},
    "jobmesh_client": {"gen", "core"},
    "launcher": {"gen", "core", "db", "jobmesh_client", *PROCESS_PACKAGES},
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path``, function-level ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.partition(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.partition(".")[0]))
    return found


def test_every_package_imports_only_the_layers_below_it() -> None:
    breaches: list[str] = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, imported in imported_packages(path):
                if imported in ALLOWED and imported != package and imported not in allowed:
                    breaches.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not breaches, "\n".join(breaches)


def test_the_rule_covers_every_package() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"scripts", "bench", "tests"} == set(ALLOWED)


def test_a_breach_is_found(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom . import x\n\ndef f():\n    from db.engine import Database\n")
    assert imported_packages(module) == [(1, "os"), (5, "db")]
