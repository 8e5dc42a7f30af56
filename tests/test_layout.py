"""The package's layout by role, checked from the code's own imports (parsed with `ast`, nothing imported).

A room imports only the rooms below it (see `course/__init__.py` and each room's docstring):
diffusion -> nn -> world -> pipelines -> recipes, with the course's tools at the top.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "course"
ROOMS = ("diffusion", "nn", "world", "pipelines", "recipes")
TOOLS = ("checkpoints", "paths", "runtime", "zoo", "train", "parity", "cli", "doctor", "bench", "student",
         "exercises", "widgets", "__main__")
# room -> what it may import of the package: rooms and top-level modules
ALLOWED = {
    "diffusion": {"diffusion"},
    "nn": {"diffusion", "nn", "checkpoints", "paths", "runtime"},
    "world": {"nn", "diffusion", "world", "checkpoints", "paths", "runtime"},
    "pipelines": {"nn", "diffusion", "world", "pipelines", "checkpoints", "zoo", "paths", "runtime"},
    "recipes": set(ROOMS) | set(TOOLS) - {"cli", "__main__"},
    "widgets": set(),  # a leaf: pure ipywidgets / matplotlib helpers
}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def imports_of(module: str) -> set[str]:
    """Every `course` module that `module` imports, at the top or inside a function."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != module}


def place(module: str) -> str:
    """The room or top-level tool a module belongs to: course.nn.unet -> "nn", course.cli -> "cli"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_room_exists_with_a_docstring_that_says_what_it_may_import():
    for room in ROOMS:
        init = PACKAGE / room / "__init__.py"
        assert init.exists(), f"course/{room}/ is missing"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "May import" in doc, f"course/{room}/__init__.py needs a docstring saying what it may import"


def test_package_inits_stay_short_and_reexport_nothing():
    for module, path in MODULES.items():
        if path.name != "__init__.py" or module == "course":
            continue
        tree = ast.parse(path.read_text())
        code = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert not code, f"{path}: a room's __init__.py holds its docstring only (one home per name)"


def test_the_top_level_holds_only_the_rooms_and_the_tools():
    top = {place(m) for m in MODULES if m != "course"}
    assert top <= set(ROOMS) | set(TOOLS), f"unexpected top-level modules: {sorted(top - set(ROOMS) - set(TOOLS))}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if place(m) in ALLOWED))
def test_a_room_imports_only_the_rooms_below_it(module):
    room = place(module)
    bad = sorted(d for d in imports_of(module) if place(d) not in ALLOWED[room] and d != "course")
    assert not bad, f"{module} ({room}/) may not import {bad}: allowed are {sorted(ALLOWED[room])}"


def test_the_math_has_no_modules_with_parameters():
    for module, path in MODULES.items():
        if place(module) != "diffusion":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not bases & {"nn.Module", "torch.nn.Module", "Module"}, f"{module}.{node.name} is an nn.Module"


def test_no_import_circles():
    graph = {m: imports_of(m) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if MODULES[d].name == "__init__.py":
                continue  # importing a package runs only its docstring
            if state.get(d) == 1:
                circle = path[path.index(d):] + [d] if d in path else [m, d]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_modules_stay_readable_in_length():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules past {MAX_LINES} lines, split them by concept: {long}"


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The rules can fail: a network that imports a recipe is caught."""
    fake = tmp_path / "course" / "nn" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from course.recipes import sd1_shapes\n")
    monkeypatch.setitem(MODULES, "course.nn.bad", fake)
    monkeypatch.setitem(MODULES, "course.recipes.sd1_shapes", PACKAGE / "recipes" / "sd1_shapes.py")
    with pytest.raises(AssertionError, match="may not import"):
        test_a_room_imports_only_the_rooms_below_it("course.nn.bad")
