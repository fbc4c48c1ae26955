"""The layout the code promises: no import cycle among ocsdf's modules, a core free of
scikit-learn, pandas, plotting and the CLI, and each core operation defined once."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import ocsdf

ROOT = Path(ocsdf.__file__).parent
CORE_FORBIDDEN = {"sklearn", "pandas", "matplotlib", "pyod", "scipy", "ocsdf.cli",
                  "ocsdf.estimator", "ocsdf.pyod", "ocsdf.bench", "ocsdf.io", "ocsdf.plot"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth (functions included),
    except under ``if TYPE_CHECKING:`` (never run)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            for alias in node.names:  # "from . import x" may import the submodule x
                out.add(f"{name}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the ocsdf modules it imports (a submodule import also runs its parents)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps = set()
        for imp in _imports(path):
            while imp and imp not in files:
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
                parent = imp.rpartition(".")[0]
                while parent and parent != name and not name.startswith(parent + "."):
                    deps.add(parent)
                    parent = parent.rpartition(".")[0]
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = dfs(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_the_import_walk_sees_real_imports():
    graph = _graph()
    assert "ocsdf.core.scorer" in graph["ocsdf.estimator"]
    assert "ocsdf.core.nn" in graph["ocsdf.core.scorer"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_ocsdf_modules():
    """Every import counts, including those inside functions (a lazy import is still a
    dependency); a package's ``__init__`` imported for its submodules counts too."""
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_core_imports_only_torch_numpy_and_itself():
    for path in (ROOT / "core").rglob("*.py"):
        for imp in _imports(path):
            assert not any(imp == bad or imp.startswith(bad + ".") for bad in CORE_FORBIDDEN), \
                f"{path.name} imports {imp}"


def test_core_loads_without_scikit_learn_pandas_or_matplotlib():
    import subprocess

    code = ("import sys, ocsdf.core; bad = [m for m in ('sklearn', 'pandas', 'matplotlib') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    # ocsdf/__init__ imports the estimator (scikit-learn); the core package itself must not
    # need it, so import the core's modules with the parent package stubbed out.
    if proc.returncode != 0 and "sklearn" in proc.stdout:
        stub = ("import sys, types, importlib.util, pathlib; "
                f"root = pathlib.Path({str(ROOT)!r}); "
                "pkg = types.ModuleType('ocsdf'); pkg.__path__ = [str(root)]; "
                "sys.modules['ocsdf'] = pkg; import ocsdf.core; "
                "bad = [m for m in ('sklearn', 'pandas', 'matplotlib') if m in sys.modules]; "
                "print(bad); sys.exit(1 if bad else 0)")
        proc = subprocess.run([sys.executable, "-c", stub], capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["cayley_orthogonal", "group_sort2", "hkr_loss",
                                  "newton_raphson_negatives", "train"])
def test_each_core_operation_is_defined_once(name):
    defs = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                defs.append(_module_name(path))
    assert len(defs) == 1, defs


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["score", "--help"]])
def test_the_command_starts_without_torch_or_scikit_learn(argv):
    """``ocsdf --version`` and every command's parser load no torch, scikit-learn or pandas
    (they cost about 3 s of start-up, measured 2.9 s before the package facade became lazy,
    0.1 s after); ``ocsdf bench`` loads its studies, which need them."""
    import subprocess

    code = ("import sys, ocsdf.cli; from contextlib import suppress\n"
            f"with suppress(SystemExit): ocsdf.cli.build_parser({argv!r}).parse_args({argv!r})\n"
            "heavy = [m for m in ('torch', 'sklearn', 'pandas') if m in sys.modules]\n"
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-300:] + proc.stderr[-300:]


def test_the_package_facade_loads_names_on_first_use():
    import subprocess

    code = ("import sys, ocsdf; assert 'torch' not in sys.modules; from ocsdf import OCSDF, "
            "Scorer, fit_many; assert 'torch' in sys.modules; print(OCSDF.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "OCSDF", proc.stderr[-300:]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ocsdf.nope  # noqa: B018
