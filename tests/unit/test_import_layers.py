"""Dependencies run one way: no module of cdp_actors or serve_apps imports, even lazily inside a function, a
module that imports it back (`identity/index.py → runtime.py → intake/dispatcher.py → identity/index.py` was one
such circle, broken by `cdp_actors/handles.py`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cdp_actors", "serve_apps")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = (targets & known.keys()) - {name}
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start → … → start, if there is one (depth-first)."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for target in graph[node]:
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    cycles = [cycle for name in sorted(graph) if (cycle := cycle_through(graph, name))]
    assert cycles == []


def test_handles_depend_only_on_ray_and_partition() -> None:
    assert import_graph()["cdp_actors.handles"] == {"cdp_actors.partition"}


def test_the_actor_modules_import_alone() -> None:
    """Each in a fresh interpreter: an import that works only after another module was loaded first fails here."""
    names = [
        "cdp_actors.identity.index",
        "cdp_actors.intake.dispatcher",
        "cdp_actors.runtime",
        "cdp_actors.forwarding.forwarder",
        "cdp_actors.profiles.shard",
        "cdp_actors.handles",
    ]
    for name in names:
        subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, check=True)
