"""The house's rules, checked from the code: imports only point down, the app logic never imports
Streamlit, no module grows past the size a reader takes in, and every package is installed."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "effdepth"

#: The floors of the house, bottom up (docs/ARCHITECTURE.md): a module may import its own floor and
#: the floors below it, never one above. A room (a package) is one floor.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("contract", "errors", "turns", "memo", "tokens"),
    ("arch",),
    ("capture", "checks", "depth", "datasets", "estimate", "positions", "ridge", "trace"),
    ("probes",),
    ("models",),
    ("engine", "generation", "linear", "stages"),
    ("compute", "mapstore", "records", "store", "verify"),
    ("charts",),
    ("sweeps",),
    ("api",),
    ("app",),
    ("cli",),
    ("ui",),
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _room(path: Path) -> str | None:
    """The room of a module: its top-level module or package under effdepth/ (None: the package face)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return None if parts in (("__init__",), ("__main__",)) else parts[0]


def _imported_rooms(path: Path) -> set[tuple[str, int]]:
    """(room, line) of every effdepth import in the module, at module level and inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = node.module.split(".")
            if names[0] != "effdepth":
                continue
            if len(names) > 1:
                found.add((names[1], node.lineno))
            else:  # from effdepth import a, b
                found |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "effdepth" and len(names) > 1:
                    found.add((names[1], node.lineno))
    return found


def test_every_room_has_a_floor():
    rooms = {_room(p) for p in _modules()} - {None}
    assert rooms <= set(FLOOR), f"rooms without a floor in FLOORS: {sorted(rooms - set(FLOOR))}"


def test_imports_only_point_down():
    upward = []
    for path in _modules():
        room = _room(path)
        if room is None:
            continue
        for target, line in _imported_rooms(path):
            if target in FLOOR and FLOOR[target] > FLOOR[room]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} (floor {FLOOR[target]} > "
                              f"{FLOOR[room]})")
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def test_the_check_sees_an_upward_import(tmp_path):
    """The import walk is not vacuous: a function-level import of the app from a probe is found."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from effdepth.app import md\n    from effdepth import engine, ui\n")
    assert _imported_rooms(probe) == {("app", 2), ("engine", 3), ("ui", 3)}


@pytest.mark.parametrize("module", ["effdepth.app", "effdepth.sweeps", "effdepth.charts", "effdepth.cli",
                                    "effdepth.api", "effdepth.compute", "effdepth.store"])
def test_no_streamlit_below_the_ui(module):
    code = f"import sys, {module}; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"importing {module} imports Streamlit"


def test_no_module_past_the_size_a_reader_takes_in():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_package_is_installed():
    """pyproject.toml lists every package of the tree (a non-editable install would miss the others)."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert listed == found


@pytest.mark.parametrize("module", ["effdepth.contract", "effdepth.checks", "effdepth.store", "effdepth.memo"])
def test_the_cache_side_needs_no_torch(module):
    """Listing, checking and exporting stored runs starts without torch (the CLI's runs / export)."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"importing {module} imports torch"
