"""The house: import floors, no circles, no hidden imports, file sizes and names (spec 05 §3).

Reads every import of the product code (top level and inside functions) with ``ast``.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The floors, lowest first: a module may import its own floor (without circles) and the floors
# below it, never a floor above. Declared once, here.
FLOORS = (
    ("pipeline",),
    ("stylegan", "cnn", "segmentation", "synthface", "stylegan_modified", "vectorfind", "editing", "legacy"),
    ("training", "evaluation"),
    ("stages", "web"),
    ("scripts",),
)
FLOOR_OF = {pkg: i for i, names in enumerate(FLOORS) for pkg in names}
PACKAGES = [p for names in FLOORS for p in names if p not in ("scripts", "legacy")]
MAX_LINES = 500
# split by what it draws (the issue allows the renderer to stay larger this way)
LINE_LIMIT_EXEMPT: set[str] = set()


def product_files() -> list[Path]:
    files = [p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in sorted((ROOT / pkg).rglob("*.py"))]
    files += sorted(ROOT.glob("run_*.py")) + [ROOT / "compute_property_scores_v2.py"]
    if (ROOT / "legacy.py").is_file():
        files.append(ROOT / "legacy.py")
    return [f for f in files if ".venv" not in f.parts]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(mod: str) -> str:
    top = mod.split(".")[0]
    return top if top in FLOOR_OF else "scripts"


MODULES = {module_name(p): p for p in product_files()}


def resolve_target(name: str) -> str | None:
    """The project module an import names (longest known prefix), or None for third-party."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in MODULES:
            return cand
    return None


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(target module, line, inside a function) for each project import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    is_pkg = path.name == "__init__.py"
    out = []

    def visit(node, in_func):
        for child in ast.iter_child_nodes(node):
            f = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    t = resolve_target(a.name)
                    if t:
                        out.append((t, child.lineno, in_func))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = me.split(".") if is_pkg else me.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                for a in child.names:
                    t = resolve_target(f"{mod}.{a.name}") or resolve_target(mod)
                    if t:
                        out.append((t, child.lineno, in_func))
            visit(child, f)

    visit(tree, False)
    return [(t, ln, f) for t, ln, f in out if t != me]


GRAPH = {m: imports_of(p) for m, p in MODULES.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            strong(v)
    return out


def _is_package_init_edge(a: str, b: str) -> bool:
    # a package's __init__ re-exporting its own modules is not a circle of the code's design
    return b.startswith(a + ".") or a.startswith(b + ".") and MODULES[b].name == "__init__.py"


def test_no_import_circles_between_files():
    edges = defaultdict(set)
    for m, imps in GRAPH.items():
        for t, _, _ in imps:
            if not _is_package_init_edge(m, t):
                edges[m].add(t)
    assert _cycles(edges) == []


def test_no_import_circles_between_packages():
    edges = defaultdict(set)
    for m, imps in GRAPH.items():
        for t, _, _ in imps:
            a, b = package_of(m), package_of(t)
            if a != b:
                edges[a].add(b)
    assert _cycles(edges) == []


def test_no_import_runs_back_up():
    up = [f"{m}:{ln} imports {t}" for m, imps in GRAPH.items() for t, ln, _ in imps
          if FLOOR_OF[package_of(t)] > FLOOR_OF[package_of(m)]]
    assert up == []


def _says_why(lines: list[str], i: int) -> bool:
    """A comment on the import's line, or just above its block of imports."""
    if "#" in lines[i]:
        return True
    j = i - 1
    while j >= 0 and lines[j].strip().startswith(("import ", "from ")):
        if "#" in lines[j]:
            return True
        j -= 1
    return j >= 0 and lines[j].strip().startswith("#")


def test_imports_inside_functions_say_why():
    hidden = []
    for m, imps in GRAPH.items():
        lines = MODULES[m].read_text().splitlines()
        for t, ln, in_func in imps:
            if in_func and not _says_why(lines, ln - 1):
                hidden.append(f"{m}:{ln} imports {t}")
    assert hidden == []


def test_each_script_imports_exactly_one_stage_module():
    wrong = {}
    for m, imps in GRAPH.items():
        if package_of(m) != "scripts":
            continue
        # a stage script's one module is in stages/; a page's (run_labeling.py) is web.app
        stages = sorted({t for t, _, _ in imps if t.startswith(("stages.", "web."))})
        others = sorted({t for t, _, _ in imps if not t.startswith(("stages.", "web.", "pipeline."))})
        if len(stages) != 1 or others:
            wrong[m] = (stages, others)
    assert wrong == {}


def test_files_are_small_and_named_by_what_they_are():
    big = {module_name(p): n for p in product_files()
           if (n := len(p.read_text().splitlines())) > MAX_LINES and module_name(p) not in LINE_LIMIT_EXEMPT}
    assert big == {}
    bad_names = [module_name(p) for p in product_files()
                 if p.stem.endswith("_test") or re.match(r"stage\d", p.stem)]
    assert bad_names == []


@pytest.mark.parametrize("word,pattern", [
    ("property names", r'^\s*\w+\s*=\s*\(\s*"eyes",\s*"hair_color"'),
    ("class names", r'^\s*\w+\s*=\s*[\(\[]\s*"background",\s*"skin"'),
])
def test_one_definition_per_word(word, pattern):
    found = [module_name(p) for p in product_files() if re.search(pattern, p.read_text(), re.M)]
    assert found == ["pipeline.vocabulary"], word
