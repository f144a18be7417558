"""The code's structure: no import cycles, one import path per name, the run directory's file names in one module.

These tests read the source as text (``ast``); they import nothing of contrastlab but the modules they check.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "contrastlab"
REPO = SRC.parent


def module_files() -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the package (a package is its ``__init__.py``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file.

    Imports inside functions count: a lazy import postpones loading a module, it does not remove the
    dependency, and two modules that need each other are one concern split in two whichever of them
    waits. ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = absolute_module(name, path, node)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def absolute_module(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The dotted module a ``from ... import`` in module ``name`` (file ``path``) reads from."""
    if not node.level:
        return node.module or ""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    return ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            step = next(successors, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_cycle_finder_finds_a_cycle_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set(), "f": {"g"}, "g": {"f", "e"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["f", "g"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_resolve_relative_and_from_package_forms(tmp_path):
    source = tmp_path / "stage.py"
    source.write_text("from ..plan import Unit\nfrom ... import rundir\ndef f():\n    from .. import context\n")
    known = {"contrastlab", "contrastlab.rundir", "contrastlab.study", "contrastlab.study.plan", "contrastlab.study.context"}
    found = imported_modules("contrastlab.study.stages.stage", source, known)
    assert found == {"contrastlab", "contrastlab.rundir", "contrastlab.study", "contrastlab.study.plan", "contrastlab.study.context"}


def test_no_import_cycles_among_contrastlab_modules():
    graph = import_graph()
    assert "contrastlab.config" in graph and "contrastlab.study.plan" in graph  # the walk found the package
    assert cycles(graph) == []


def test_config_is_imported_by_its_checks_not_the_reverse():
    graph = import_graph()
    assert "contrastlab.config" in graph["contrastlab.config_checks"]
    assert "contrastlab.config_checks" not in graph["contrastlab.config"]
    assert "contrastlab.study.plan" in graph["contrastlab.study.context"]
    assert "contrastlab.study.context" not in graph["contrastlab.study.plan"]


def test_the_report_reads_surfaces_without_the_landscape_kernel():
    graph = import_graph()
    report = [m for m in graph if m.startswith("contrastlab.report")]
    assert not [m for m in report if "contrastlab.analysis.landscape" in graph[m]]
    assert any("contrastlab.analysis.surface_grid" in graph[m] for m in report)


REMOVED = [  # (module, name): names with one import path elsewhere, or no user at all
    ("contrastlab.models", "fold_batchnorm"),  # contrastlab.models.batchnorm
    ("contrastlab.analysis.checks", "autocast"),  # contrastlab.precision
    ("contrastlab.analysis.checks", "PRECISIONS"),
    ("contrastlab.study.plan", "ANALYSES"),  # contrastlab.rundir.PER_RUN_KINDS
    ("contrastlab.study.plan", "task_name"),  # contrastlab.rundir
    ("contrastlab.config", "load_config"),  # contrastlab.config_checks
    ("contrastlab.config", "check_config"),
    ("contrastlab.report.html", "markdown_table"),  # dead
    ("contrastlab.utils.tensorboard", "ScalarWriter"),  # dead
    *[("contrastlab.analysis.landscape", name) for name in (
        "IGNORES", "NORMALIZATIONS", "PRECISIONS", "Direction", "LandscapeInputError", "ParameterSelector", "Surface",
        "fold_batchnorm", "load_surface", "parameter_mask", "random_directions", "save_surface")],
]


def exported_names(path: Path) -> set[str]:
    """The names a module offers to others: what it defines or assigns at its top level, what its
    ``__all__`` lists, and what it imports without using (a re-export); an import it uses itself is its own."""
    tree = ast.parse(path.read_text())
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                names.update(ast.literal_eval(node.value))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(a.asname or a.name for a in node.names if (a.asname or a.name) not in used)
    return names


@pytest.mark.parametrize(("module", "name"), REMOVED, ids=[f"{m}.{n}" for m, n in REMOVED])
def test_removed_names_are_gone(module, name):
    assert name not in exported_names(module_files()[module])


def test_launchers_package_exports_only_run_units():
    launchers = importlib.import_module("contrastlab.study.launchers")
    assert launchers.__all__ == ["run_units"]
    assert "contrastlab.study.launchers" in module_files()


def test_removed_names_are_imported_from_nowhere():
    """No module, test or benchmark imports a removed name from its old place."""
    named = {path: name for name, path in module_files().items()}
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "tests").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = absolute_module(named.get(path, path.stem), path, node)
                offenders += [f"{path.relative_to(REPO)}: {module}.{a.name}" for a in node.names if (module, a.name) in REMOVED]
    assert offenders == []


# ---- the run directory's file names in one module (31.3) -----------------------------------------

def layout_names() -> tuple[set[str], set[str]]:
    """(file names, folder names) of the layout: the upper-case string constants that contrastlab/rundir.py
    itself assigns (a name with a dot is a file: "encoder.safetensors"; one without is a folder: "checkpoints")."""
    values = set()
    for node in ast.parse((PACKAGE / "rundir.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            if any(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets):
                values.add(node.value.value)
    files = {v for v in values if "." in v.strip(".")}
    return files, values - files - {""}


def docstring_ids(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def path_literals(path: Path) -> list[tuple[int, str, bool]]:
    """(line, text, joined) of every string literal in the code of ``path``, f-strings' literal parts included;
    ``joined``: an operand of ``/`` (a path being built). Docstrings are left out: they describe the layout
    to a reader, they make no paths."""
    tree = ast.parse(path.read_text())
    skip = docstring_ids(tree)
    joined = {id(side) for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
              for side in (node.left, node.right)}
    return [(node.lineno, node.value, id(node) in joined) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


def spells_a_layout_name(text: str, joined: bool, files: set[str], folders: set[str]) -> bool:
    """A literal holding a layout file name as a path part, a layout folder name in a path, or the pattern
    of epoch checkpoints, extra surfaces and their resume files. A bare word ("report") is a folder only
    where it is joined to a path or holds a slash: config sections share those words."""
    parts = set(re.split(r"[/\\]", text))
    in_path = joined or "/" in text
    return bool(parts & files) or (in_path and bool(parts & folders)) \
        or bool(re.search(r"epoch_\{|epoch_\*|surface_\S*\.npy|surface\*|partial(_\S*)?\.npy", text))


def test_only_rundir_spells_the_run_directorys_file_names():
    files, folders = layout_names()
    assert {"encoder.safetensors", "probe.safetensors", "snapshots.npy", "result.json", "metrics.csv", "done.json",
            "sharpness.json", "surface.npy", "report.html"} <= files
    assert {"checkpoints", "report", "figures", "tables"} <= folders
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative == "contrastlab/rundir.py":
            continue
        found += [f"{relative}:{line}: {text!r}" for line, text, joined in path_literals(path)
                  if spells_a_layout_name(text, joined, files, folders)]
    assert found == [], "use the names and functions of contrastlab.rundir:\n" + "\n".join(found)


def test_the_file_name_check_sees_what_it_should(tmp_path):
    files, folders = layout_names()
    source = tmp_path / "module.py"
    source.write_text('''"""Writes report/report.html and encoder.safetensors."""
a = folder / "encoder.safetensors"
b = run_dir / "report"
c = f"{unit}/checkpoints/epoch_{e:04d}.safetensors"
d = sorted(folder.glob("surface*.npy"))
e = config.get("report")
f = "the encoder"
g = f"fgsm_{space}"
''')
    flagged = [line for line, text, joined in path_literals(source) if spells_a_layout_name(text, joined, files, folders)]
    assert flagged == [2, 3, 4, 5]  # not the docstring, nor a config section or words


def test_the_architecture_map_names_every_module():
    """docs/architecture.md has one line per module: a new module gets its line there."""
    text = (REPO / "docs" / "architecture.md").read_text()
    unnamed = [f"{path.relative_to(PACKAGE).as_posix()}" for path in sorted(PACKAGE.rglob("*.py"))
               if f"`{path.relative_to(PACKAGE).as_posix()}`" not in text]
    assert unnamed == []
