"""The package's import structure, read with ``ast``: layers, no import circle, lazy imports justified.

The rule (docs/DESIGN.md, "Layers"): ``base`` < ``core`` < {``participant``, ``group``} < ``entry``.
A module imports modules of its own layer or of lower ones; ``participant`` and ``group`` never
import each other; nothing but ``entry`` imports the command line. Among the package's modules
the import graph, counting imports inside functions, has no cycle. An import inside a function
is allowed only to keep a heavy dependency (:data:`HEAVY`) out of a light module's start-up: it
must carry a ``# lazy: <reason>`` comment and import something heavy (a heavy library, or a
package module that imports one at its top level).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "bids_msseg"

#: Libraries that are slow to import or start native thread pools: kept out of the CLI's start-up.
HEAVY = ("torch", "nipype", "ants", "segmentation_models_pytorch", "safetensors", "bids", "nilearn",
         "matplotlib", "skimage")

#: Layers, lowest first, and the modules (prefixes, longest match wins) in each; the rest is ``core``.
LAYER_OF_PREFIX = {
    "bids_msseg": "base",  # the package itself: version only
    "bids_msseg.errors": "base",
    "bids_msseg.io": "base",
    "bids_msseg.settings": "base",
    "bids_msseg._compat": "base",
    "bids_msseg.provenance": "base",
    "bids_msseg.interfaces": "participant",
    "bids_msseg.workflows": "participant",
    "bids_msseg.group": "group",
    "bids_msseg.cohort": "group",
    "bids_msseg.frequency": "group",
    "bids_msseg.evaluation": "group",
    "bids_msseg.reports.group": "group",
    "bids_msseg.train.bids_training": "group",
    "bids_msseg.crosssite": "group",
    "bids_msseg.cli": "entry",
    "bids_msseg.__main__": "entry",
    "bids_msseg.demo": "entry",
}
ALLOWED = {
    "base": {"base"},
    "core": {"base", "core"},
    "participant": {"base", "core", "participant"},
    "group": {"base", "core", "group"},
    "entry": {"base", "core", "participant", "group", "entry"},
}


@dataclass(frozen=True)
class Import:
    """One import statement's target as seen from ``module``."""

    module: str
    target: str  # a package module (``bids_msseg...``) or a third-party top-level name
    line: int
    in_function: bool
    type_only: bool  # under ``if TYPE_CHECKING:``
    comment: str  # the source line (and the one above), to find ``# lazy:``


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def layer(module: str) -> str:
    best = max((p for p in LAYER_OF_PREFIX if module == p or module.startswith(p + ".")), key=len, default=None)
    if best == "bids_msseg" and module != "bids_msseg":
        return "core"
    return LAYER_OF_PREFIX[best] if best else "core"


def _resolve(name: str, imported: list[str]) -> list[str]:
    """Package modules named by ``from name import a, b`` (``name.a`` when it is a module)."""
    out = [f"{name}.{item}" if f"{name}.{item}" in MODULES else name for item in imported]
    return list(dict.fromkeys(out)) or [name]


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            func = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            typing = type_only or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import | ast.ImportFrom):
                comment = " ".join(lines[max(0, child.lineno - 2):child.end_lineno])
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                    targets = [n if n.startswith("bids_msseg") else n.split(".")[0] for n in names]
                else:
                    base = child.module or ""
                    if child.level:
                        pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                        base = ".".join(pkg[:len(pkg) - child.level + 1] + ([base] if base else []))
                    if base == "__future__":
                        continue
                    if base.startswith("bids_msseg"):
                        targets = _resolve(base, [a.name for a in child.names])
                    else:
                        targets = [base.split(".")[0] if base.split(".")[0] != "safetensors" else "safetensors"]
                for target in targets:
                    found.append(Import(module, target, child.lineno, in_function, type_only, comment))
            visit(child, func, typing)

    visit(tree, False, False)
    return found


ALL_IMPORTS = [imp for module in MODULES for imp in imports_of(module)]
PACKAGE_IMPORTS = [i for i in ALL_IMPORTS if i.target.startswith("bids_msseg") and i.target != i.module]


def top_level_closure(module: str) -> set[str]:
    """Everything ``module`` imports when it is imported (module-level imports, transitively)."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        for imp in imports_of(current):
            if imp.in_function or imp.type_only or imp.target in seen:
                continue
            seen.add(imp.target)
            if imp.target in MODULES:
                todo.append(imp.target)
    return seen


def is_heavy(target: str) -> bool:
    if target in MODULES:
        return any(t.split(".")[0] in HEAVY for t in top_level_closure(target) if t not in MODULES)
    return target.split(".")[0] in HEAVY


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` (as a list of nodes), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_layers_are_known() -> None:
    assert {layer(m) for m in MODULES} <= set(ALLOWED)
    assert layer("bids_msseg.cli.run") == "entry" and layer("bids_msseg.lesions") == "core"


def test_no_import_cycle() -> None:
    """Imports inside functions count: a lazy import never hides a circle."""
    edges: dict[str, set[str]] = {}
    for imp in PACKAGE_IMPORTS:
        if not imp.type_only:
            edges.setdefault(imp.module, set()).add(imp.target)
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_layer_rule() -> None:
    """Imports under ``if TYPE_CHECKING:`` (annotations only, never executed) are exempt."""
    bad = [f"{i.module} ({layer(i.module)}) imports {i.target} ({layer(i.target)}), line {i.line}"
           for i in PACKAGE_IMPORTS if not i.type_only and layer(i.target) not in ALLOWED[layer(i.module)]]
    assert not bad, "\n".join(bad)


def test_lazy_imports_keep_heavy_dependencies_out() -> None:
    """In-function imports: marked ``# lazy: <reason>``, and only of something heavy."""
    bad = []
    for imp in ALL_IMPORTS:
        if not imp.in_function or imp.type_only or imp.target == imp.module:
            continue
        if "# lazy:" not in imp.comment:
            bad.append(f"{imp.module}:{imp.line} imports {imp.target} in a function without '# lazy: <reason>'")
        elif not is_heavy(imp.target):
            bad.append(f"{imp.module}:{imp.line} imports {imp.target} lazily, but it is light: import it at the "
                       "top (a lazy import must not hide a circle)")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", ["bids_msseg.settings", "bids_msseg.cli.parser"])
def test_settings_and_parser_are_light(module: str) -> None:
    """The settings module and the parser load neither argparse's users' heavy libraries nor nipype."""
    closure = top_level_closure(module)
    assert not {t.split(".")[0] for t in closure} & {*HEAVY, "numpy", "pandas", "nibabel", "scipy"}, closure
    if module == "bids_msseg.settings":
        assert "argparse" not in closure


def test_cli_start_up_is_light() -> None:
    """``bids_msseg --help`` and the participant scheduler import no torch, nipype or ANTs at start-up."""
    closure = top_level_closure("bids_msseg.cli.run")
    assert not {t.split(".")[0] for t in closure} & {"torch", "nipype", "ants", "segmentation_models_pytorch"}
