"""The package's imports point one way: no cycles, nothing low
imports something high, and only the UI layer imports Streamlit.

Read from the source with ast (nothing is imported): `import` and `from ... import`
statements anywhere in a file (inside functions too), and importlib.import_module /
__import__ calls with a literal module name.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import its own layer or any layer below it, never above.
LAYERS = [
    ("base", ["smeme.threads", "smeme.optim", "smeme.schedule", "smeme.extensions", "smeme.config", "smeme.safe_io",
              "smeme.fsio"]),
    ("data", ["smeme.data"]),
    ("models", ["smeme.models"]),
    ("sampling / density / training", ["smeme.sampling", "smeme.density", "smeme.train", "smeme.presets"]),
    ("solvers", ["smeme.solvers"]),
    ("explore / tilt / metrics", ["smeme.explore", "smeme.tilt", "smeme.metrics", "smeme.api"]),
    ("store", ["smeme.store", "smeme.deferred"]),
    ("pipeline, budget", ["smeme.pipeline", "smeme.budget"]),
    ("images", ["smeme.images"]),
    ("bundles", ["smeme.bundle", "smeme.run_schema"]),  # a bundle carries point runs and image (SD) runs alike
    ("services", ["smeme.services"]),
    ("ui and cli", ["smeme.ui", "smeme.cli", "smeme.__main__", "smeme.progress"]),
    ("pages", ["app", "pages"]),
    ("the package's public names", ["smeme"]),  # smeme/__init__ loads smeme.api on first use
]
STREAMLIT_LAYERS = {"ui and cli", "pages"}


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((ROOT / "smeme").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    files["app"] = ROOT / "app.py"
    for path in sorted((ROOT / "pages").glob("*.py")):
        files[f"pages.{path.stem}"] = path
    return files


def layer_of(module: str) -> int | None:
    """Index of the layer whose longest prefix names `module`."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def imported_names(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            out.add(stem)
            out.update(f"{stem}.{a.name}" for a in node.names)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")):
            out.add(node.args[0].value)
    return out


def import_graph():
    files = module_files()
    edges, streamlit = set(), set()
    for mod, path in files.items():
        for name in imported_names(mod, path):
            if name.split(".")[0] == "streamlit":
                streamlit.add(mod)
            target = name
            while target and target not in files:  # the longest known module the name names
                target = target.rsplit(".", 1)[0] if "." in target else ""
            # a package's own parent (and the top package, a namespace) are not edges
            if target and target != mod and not mod.startswith(target + ".") and target != "smeme":
                edges.add((mod, target))
    return files, edges, streamlit


def test_every_module_has_a_layer():
    files, _, _ = import_graph()
    missing = sorted(m for m in files if layer_of(m) is None)
    assert not missing, f"Give these modules a layer in tests/test_layers.py: {missing}"


def test_no_import_points_up():
    _, edges, _ = import_graph()
    up = sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                for a, b in edges if layer_of(a) is not None and layer_of(b) is not None
                and layer_of(b) > layer_of(a))
    assert not up, "Imports from a lower layer into a higher one:\n" + "\n".join(up)


def test_no_import_cycles():
    files, edges, _ = import_graph()
    graph = {m: sorted(b for a, b in edges if a == m) for m in files}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                return path[path.index(n):] + [n] if n in path else [m, n]
            if n not in state:
                cycle = visit(n, path + [n])
                if cycle:
                    return cycle
        state[m] = 2
        return None

    for m in graph:
        if m not in state:
            cycle = visit(m, [m])
            assert cycle is None, "Import cycle: " + " -> ".join(cycle)


def test_only_the_ui_imports_streamlit():
    _, _, streamlit = import_graph()
    outside = sorted(m for m in streamlit if LAYERS[layer_of(m)][0] not in STREAMLIT_LAYERS)
    assert not outside, f"Only smeme.ui, app.py and pages/ may import Streamlit; also: {outside}"


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The walk itself works: a lower module importing a higher one (lazily, by string) is caught."""
    fake = tmp_path / "smeme"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("import importlib\n\n\ndef f():\n"
                                               "    return importlib.import_module('smeme.store')\n")
    (fake / "store.py").write_text("from .data import f\n")
    (tmp_path / "pages").mkdir()
    (tmp_path / "app.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    _, edges, _ = import_graph()
    assert ("smeme.data", "smeme.store") in edges and ("smeme.store", "smeme.data") in edges


def test_only_the_cli_parses_command_lines():
    """One command line: every subcommand (sd-explore included) is defined in smeme/cli.py."""
    files = module_files()
    parsers = sorted(m for m, path in files.items() if m.startswith("smeme")
                     and "argparse" in {n.split(".")[0] for n in imported_names(m, path)})
    assert parsers == ["smeme.cli"], parsers
