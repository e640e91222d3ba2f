"""The code's shape, read from the source (ast, nothing imported): no library function over 80 lines, and `classify`
and demo.py never import `curate`. `python tests/test_structure.py [N]` lists the functions over N lines (default 80)."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted([*ROOT.glob("classify/**/*.py"), *ROOT.glob("curate/**/*.py"), ROOT / "demo.py"])
MAX_FUNCTION_LINES = 80
# Files whose long functions are tolerated for now, each with why and who removes the entry (2026-12).
ALLOWED_LONG: dict[str, str] = {}


def function_lengths(path: Path) -> list[tuple[int, str, int]]:
    """(lines, name, first line) of every function and method in `path`, nested ones too, from `def` to its end."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(node.end_lineno - node.lineno + 1, node.name, node.lineno) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def long_functions(limit: int = MAX_FUNCTION_LINES, skip=()) -> list[str]:
    """"path:line name (N lines)" for every library function over `limit` lines, longest first."""
    found = []
    for path in LIBRARY:
        name = path.relative_to(ROOT).as_posix()
        if name not in skip:
            found += [(lines, f"{name}:{line} {function} ({lines} lines)")
                      for lines, function, line in function_lengths(path) if lines > limit]
    return [text for _, text in sorted(found, reverse=True)]


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_library_function_over_80_lines():
    assert long_functions(skip=ALLOWED_LONG) == []


def test_the_allow_list_names_files_that_exist():
    assert all((ROOT / name).is_file() for name in ALLOWED_LONG)


def test_classify_and_the_demo_never_import_curate():
    files = [p for p in LIBRARY if p.parts[len(ROOT.parts)] != "curate"]
    assert len(files) > 20 and ROOT / "demo.py" in files
    found = {p.relative_to(ROOT).as_posix(): sorted(m for m in imported_modules(p) if m.split(".")[0] == "curate")
             for p in files}
    assert {name: modules for name, modules in found.items() if modules} == {}
    assert "curate.embeddings" in imported_modules(ROOT / "curate" / "suspects.py")  # the parser sees imports


if __name__ == "__main__":
    print("\n".join(long_functions(int(sys.argv[1]) if len(sys.argv) > 1 else MAX_FUNCTION_LINES)) or "none")
