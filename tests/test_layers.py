"""The package's imports point one way: no cycles, nothing low
imports something high, and only the UI layer imports Streamlit.

Read from the source with ast (nothing is imported): `import` and `from ... import`
statements anywhere in a file (inside functions too), and importlib.import_module /
__import__ calls with a literal module name.
"""
from __future__ import annotations

import ast
import re
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
    ("explore / tilt / metrics", ["smeme.explore", "smeme.reward", "smeme.tilt", "smeme.metrics", "smeme.api"]),
    ("store", ["smeme.run_files", "smeme.store", "smeme.deferred"]),
    ("pipeline, budget", ["smeme.pipeline", "smeme.budget"]),
    ("images", ["smeme.images"]),
    # a bundle carries point runs and image (SD) runs alike
    ("bundles", ["smeme.bundle", "smeme.bundle_contents", "smeme.run_schema"]),
    ("services", ["smeme.services"]),
    ("ui and cli", ["smeme.ui", "smeme.cli", "smeme.cli_commands", "smeme.__main__", "smeme.progress"]),
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


# -- sizes: no module over ~500 lines, no function over ~60 ---------------------------------------
MAX_MODULE_LINES = 520
MAX_FUNCTION_LINES = 60
# Justified exceptions, each with its reason: {"smeme.module": lines} or {"smeme.module:function": lines}.
# Empty: every module and function is within the limits.
SIZE_EXCEPTIONS: dict[str, int] = {}


def smeme_files() -> dict[str, Path]:
    return {m: p for m, p in module_files().items() if m == "smeme" or m.startswith("smeme.")}


def oversized(files: dict[str, Path]) -> list[str]:
    """'<module> (<lines> lines)' and '<module>:<function> (<lines> lines)' over the limits,
    less the allowed exceptions; a function's lines run from its `def` (or first decorator) to
    its last line, docstring included."""
    found = []
    for mod, path in files.items():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > max(MAX_MODULE_LINES, SIZE_EXCEPTIONS.get(mod, 0)):
            found.append(f"{mod} ({lines} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - first + 1
                if length > max(MAX_FUNCTION_LINES, SIZE_EXCEPTIONS.get(f"{mod}:{node.name}", 0)):
                    found.append(f"{mod}:{node.name} ({length} lines)")
    return found


def test_no_module_or_function_is_too_long():
    found = oversized(smeme_files())
    assert not found, (f"Over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function (split it "
                       "along a seam, or add a justified entry to SIZE_EXCEPTIONS):\n" + "\n".join(found))


def test_the_size_check_sees_a_long_function_and_module(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))  # def line + 60 = 61 lines
    (tmp_path / "long.py").write_text("def f():\n" + body + "\n" * (MAX_MODULE_LINES - MAX_FUNCTION_LINES))
    (tmp_path / "short.py").write_text("def g():\n" + body[: body.rindex("    x")])  # exactly 60 lines
    found = oversized({"smeme.long": tmp_path / "long.py", "smeme.short": tmp_path / "short.py"})
    assert found == [f"smeme.long ({MAX_MODULE_LINES + 1} lines)",
                     f"smeme.long:f ({MAX_FUNCTION_LINES + 1} lines)"], found


# -- results are returned, never written onto a config object ---------------------------------------
CONFIG_NAME = re.compile(r"(^|_)(cfg|config)$", re.IGNORECASE)  # cfg, solver_cfg, config, explore_config, ...


def _names_a_config(node: ast.AST) -> bool:
    """`cfg`, `solver_cfg`, `self.config`, `run.sd_config`: an expression named as a config."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return bool(CONFIG_NAME.search(name))


def config_writes(path: Path) -> list[str]:
    """Lines of `path` that write an attribute onto an object named as a config (cfg.x = ...,
    cfg.x += ..., cfg.__dict__[...] = ..., setattr(cfg, ...), object.__setattr__(cfg, ...),
    cfg.__setattr__(...)), except inside __init__ / __post_init__ (a config setting up its own
    fields). A config is built whole (its constructor, dataclasses.replace) and results travel
    as return values. Items of a dict named config (a run's config.json being built) pass."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    exempt = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              and fn.name in ("__init__", "__post_init__") for n in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        owners = []
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in (t for target in targets for t in ast.walk(target)):  # also `a, cfg.x = ...`
            if isinstance(t, ast.Attribute) and isinstance(t.ctx, ast.Store):
                owners.append(t.value)
            elif (isinstance(t, ast.Subscript) and isinstance(t.ctx, ast.Store) and isinstance(t.value, ast.Attribute)
                  and t.value.attr == "__dict__"):
                owners.append(t.value.value)
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
            fn = node.func
            called = fn.id if isinstance(fn, ast.Name) else fn.attr
            via_object = isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id == "object"
            if (called == "setattr" or via_object and called == "__setattr__") and node.args:
                owners.append(node.args[0])
            elif called == "__setattr__" and isinstance(fn, ast.Attribute):
                owners.append(fn.value)
        if any(_names_a_config(owner) for owner in owners):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return found


def test_no_code_writes_results_onto_a_config():
    found = [hit for mod, path in smeme_files().items() for hit in config_writes(path)]
    assert not found, "Attributes written onto a config object (return them instead):\n" + "\n".join(found)


def test_the_config_check_sees_each_way_of_writing_onto_a_config(tmp_path):
    path = tmp_path / "solver.py"
    path.write_text(
        "from dataclasses import dataclass\n\n\n"
        "@dataclass\nclass SolverConfig:\n    lr: float = 1e-3\n\n"
        "    def __post_init__(self):\n        self.lr = float(self.lr)\n\n\n"  # a config's own fields: allowed
        "def solve(solver_cfg, run, cfg, config):\n"
        "    solver_cfg.health = {}\n"  # 13
        "    run.sd_config.timings += 1\n"  # 14
        "    setattr(cfg, 'losses', [])\n"  # 15
        "    object.__setattr__(config, 'seen', 1)\n"  # 16
        "    config.__dict__['x'] = 2\n"  # 17
        "    a, self.explore_config.lam = 1, 2\n"  # 18
        "    cfg.__setattr__('y', 3)\n"  # 19
        "    run_config = {}\n    run_config['schema_version'] = 1\n"  # a dict being built: allowed
        "    out = cfg.lr\n    result.cfg = cfg\n"  # reading a config, or storing one: allowed
        "    cfg.items['k'] = 4\n"  # an item of a field (not the config's own attribute): passes
        "    return out\n")
    lines = [int(hit.split(":")[1]) for hit in config_writes(path)]
    assert sorted(lines) == [13, 14, 15, 16, 17, 18, 19], config_writes(path)
