"""The package's import graph: every import (module-level, lazy or for type checking) points to the same
floor or a lower one, and no modules import each other in a circle. The floors are the map in
the README's Layout section; a new module must be given its floor here."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "massact_viz"

#: floor of each module (longest dotted prefix wins), from the bottom up
FLOORS = {
    # 0 core: names, files and the model's description; nothing here runs a pipeline
    "massact_viz.errors": 0, "massact_viz.version": 0, "massact_viz.specs": 0, "massact_viz.files": 0,
    "massact_viz.prompts": 0, "massact_viz.intervals": 0, "massact_viz.families": 0, "massact_viz.hooks": 0,
    "massact_viz.nnsight_engine": 0,
    "massact_viz.stats": 0, "massact_viz.run": 0, "massact_viz.dit": 0, "massact_viz.testing": 0, "massact_viz.palette": 0,
    "massact_viz.progress": 0,
    "massact_viz.shapes.scenes": 0, "massact_viz.shapes.vae": 0, "massact_viz.shapes.model": 0,
    "massact_viz.shapes.binding": 0, "massact_viz.shapes": 0,
    # 1 engine: running a model with hooks, edits and resumable scans
    "massact_viz.capture": 1, "massact_viz.edits": 1, "massact_viz.scan": 1, "massact_viz.model": 1,
    "massact_viz.distributed": 1,
    # 2 analysis and metrics over runs and images; the teaching model's trainer (a wing on the core)
    "massact_viz.analysis": 2, "massact_viz.metrics": 2, "massact_viz.shapes.train": 2,
    # 3 probes: localization, disruption, transport, inversion
    "massact_viz.probes": 3,
    # 4 views: figures, widgets, the HTML report
    "massact_viz.plots": 4, "massact_viz.widgets": 4, "massact_viz.report": 4,
    # 5 faces: the command line and the package namespace users import
    "massact_viz.cli": 5, "massact_viz": 5, "massact_viz.__main__": 5,
}


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _edges(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    edges.setdefault(mod, set()).add(t)
    return edges


def _floor(mod: str) -> int:
    best = max((p for p in FLOORS if mod == p or mod.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{mod} has no floor in tests/test_architecture.py FLOORS (and the README Layout)"
    return FLOORS[best]


def test_every_module_has_a_floor():
    for mod in _modules():
        _floor(mod)


def test_every_import_points_down_or_level():
    up = sorted(f"{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)})"
                for a, bs in _edges(_modules()).items() for b in bs if _floor(b) > _floor(a))
    assert not up, "imports that run back up:\n" + "\n".join(up)


def test_no_import_circle():
    edges, seen, done, circles = _edges(_modules()), [], set(), []

    def visit(m: str) -> None:
        if m in done:
            return
        if m in seen:
            circles.append(seen[seen.index(m):] + [m])
            return
        seen.append(m)
        for n in sorted(edges.get(m, ())):
            visit(n)
        seen.pop()
        done.add(m)
    for m in sorted(_modules()):
        visit(m)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_checker_sees_lazy_and_type_checking_imports():
    edges = _edges(_modules())
    assert "massact_viz.shapes.model" in edges["massact_viz.model"]  # lazy, inside load()
    assert "massact_viz.dit" in edges["massact_viz.capture"]  # under TYPE_CHECKING
    assert "massact_viz.capture" in edges["massact_viz.probes.inversion"]  # relative, inside a function
    assert "massact_viz.shapes.scenes" in edges["massact_viz.probes.localization.masks"]  # three dots, inside a function
