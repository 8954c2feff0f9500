"""The code-shape rules of docs/architecture.md, checked: no module over 400 lines and no function over
60 lines outside tests, unless a `# long: <reason>` comment says why (on the line above the function or
its decorators; for a module, among its first ten lines)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("toonface", "flows", "pipeline", "models", "data_manifest")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def has_reason(lines: list[str], line_no: int) -> bool:
    """A `# long:` comment with a reason on line `line_no` (1-based)."""
    text = lines[line_no - 1].strip() if 0 < line_no <= len(lines) else ""
    return text.startswith("# long:") and len(text) > len("# long:") + 3


def too_long(path: Path) -> list[str]:
    """What in one file breaks the rules, as 'path:line name (n lines)'."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    if len(lines) > MAX_MODULE_LINES and not any(has_reason(lines, n) for n in range(1, 11)):
        found.append(f"{path} ({len(lines)} lines)")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if length > MAX_FUNCTION_LINES and not has_reason(lines, first - 1):
                found.append(f"{path}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_module_or_function_is_longer_than_the_rule_without_a_reason():
    assert [problem for path in sources() for problem in too_long(path)] == []


@pytest.mark.parametrize("reason, flagged", [("", True), ("# long: one option a line", False)])
def test_a_long_function_passes_only_with_a_reason(tmp_path, reason, flagged):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "module.py"
    path.write_text(f"{reason}\ndef f():\n{body}\n")
    assert bool(too_long(path)) is flagged
