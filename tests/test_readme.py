"""README.md matches the code: its module table names every module of smeme/ and nothing
that does not exist, its layout map names every layer of tests/test_layers.py in order, it
starts with the two set-up commands, and it points only at files in the repository.

The module table is the one under "## How the code is laid out" (header `| module | ...`).
A row names modules as backticked paths in its first cell: a file (`smeme/store.py`) or a
package (`smeme/images/`), whose row then names each of its files as a backticked `name.py`
(its `__init__.py` is the package row itself).
"""
from __future__ import annotations

import re
from pathlib import Path

from test_layers import LAYERS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
LAYOUT_HEADING = "## How the code is laid out"


def layout_section() -> str:
    start = README.index(LAYOUT_HEADING)
    end = README.find("\n## ", start + len(LAYOUT_HEADING))
    return README[start:end if end >= 0 else None]


def module_rows() -> list[tuple[str, str]]:
    """(first cell, second cell) of every row of the module table."""
    lines = layout_section().splitlines()
    header = next(i for i, line in enumerate(lines) if re.match(r"\|\s*module\s*\|", line))
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0], " | ".join(cells[1:])))
    return rows


def named_modules() -> tuple[set[str], set[str]]:
    """(module files the table names, package folders it names), as paths from the root."""
    files, packages = set(), set()
    for first, rest in module_rows():
        for path in re.findall(r"`([^`]+)`", first):
            if path.endswith("/"):
                packages.add(path)
                files.update(path + name for name in re.findall(r"`([\w]+\.py)`", rest))
            else:
                files.add(path)
    return files, packages


def shipped_modules() -> tuple[set[str], set[str]]:
    """(every module file of smeme/ except subpackages' __init__.py, every subpackage folder)."""
    files, packages = set(), set()
    for path in (ROOT / "smeme").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if path.name == "__init__.py" and path.parent != ROOT / "smeme":
            packages.add(rel[: -len("__init__.py")])
        else:
            files.add(rel)
    return files, packages


def test_the_module_table_names_every_module():
    shipped_files, shipped_packages = shipped_modules()
    files, packages = named_modules()
    assert not shipped_files - files, f"Name these in README's module table: {sorted(shipped_files - files)}"
    assert not shipped_packages - packages, f"Give these packages a row: {sorted(shipped_packages - packages)}"


def test_the_module_table_names_only_modules_that_exist():
    files, packages = named_modules()
    missing = sorted(p for p in files | packages if not (ROOT / p).exists())
    assert not missing, f"README's module table names what does not exist: {missing}"


def layout_map() -> str:
    """The code block of the layout section: the layers, lowest first."""
    return re.search(r"```\n(.*?)```", layout_section(), re.S).group(1)


def map_name(module: str) -> str:
    """How the layout map writes a module of LAYERS."""
    return {"app": "app.py", "pages": "pages/", "smeme": "smeme/__init__.py"}.get(module, module.split(".")[-1])


def test_the_layout_map_names_every_layer_in_order():
    text = layout_map()
    where = {}
    for i, (_, modules) in enumerate(LAYERS):
        for module in modules:
            name = map_name(module)
            hit = re.search(rf"(?<![\w/.]){re.escape(name)}(?![\w])", text)
            assert hit, f"README's layout map does not name {name} (layer {LAYERS[i][0]!r})"
            where[module] = (i, hit.start())
    by_layer = sorted(where.values())
    out_of_order = [(a, b) for a, b in zip(by_layer, by_layer[1:]) if a[0] < b[0] and a[1] > b[1]]
    assert not out_of_order, "README's layout map lists a layer after one above it"


def test_the_readme_starts_with_the_two_setup_commands():
    head = README.split("```")[1].strip().splitlines()
    assert head[0] == "bash"
    assert head[1].endswith("&& streamlit run app.py")
    assert "-m pytest" in head[2]
    assert len(head) == 3


def test_the_readme_points_only_at_files_in_the_repository():
    assert "../" not in README and "DESIGN.md" not in README
    paths = set(re.findall(r"`((?:[\w.-]+/)+[\w.-]+\.\w+)`", README))  # `folder/file.ext`
    paths |= set(re.findall(r"`([\w.-]+\.md)`", README))  # `BENCHMARKS.md`
    paths |= set(re.findall(r"\]\(([^)#:]+)\)", README))  # links and images
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert paths and not missing, f"README points at files that are not in the repository: {missing}"
