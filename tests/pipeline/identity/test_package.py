"""How the identity package hangs together: it never imports the annotation tool (which imports it),
imports its own modules at their top, and the matching rule needs neither a model nor files."""

import ast
from pathlib import Path

import pipeline.identity

PACKAGE = Path(pipeline.identity.__file__).parent


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, imported at the top of the file) of every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", id(node) in top))
    return found


def test_no_module_imports_the_annotation_tool_or_a_pipeline_module_lazily():
    for path in sorted(PACKAGE.glob("*.py")):
        for module, at_top in imports(path):
            assert not module.startswith("pipeline.annotate"), (path.name, module)
            assert at_top or not module.startswith("pipeline"), (path.name, module)


def test_matching_is_pure_numpy_and_pandas():
    assert {m for m, _ in imports(PACKAGE / "matching.py")} == {"__future__", "numpy", "pandas"}
