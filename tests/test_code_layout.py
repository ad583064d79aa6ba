"""The package stays readable: no function or method longer than a screen."""

import ast
import io
from pathlib import Path
import tokenize

import dipy_ext

MAX_CODE_LINES = 60
PACKAGE = Path(dipy_ext.__file__).parent


def docstring_lines(tree):
    """Line numbers taken by docstrings (modules, classes and functions)."""
    lines = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body:
            continue
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source):
    """Line numbers holding code: no blank, comment-only or docstring line."""
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines - docstring_lines(ast.parse(source))


def long_functions(path, limit=MAX_CODE_LINES):
    """(name, code lines) of the functions in ``path`` longer than ``limit``
    (from its ``def`` line, decorators not counted; a nested function
    counts in its enclosing one as well)."""
    source = Path(path).read_text()
    code = code_lines(source)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = len(code & set(range(node.lineno, node.end_lineno + 1)))
            if n > limit:
                found.append((f"{path}:{node.lineno} {node.name}", n))
    return found


def test_counter_counts_code_only(tmp_path):
    body = "\n".join(f"    x{i} = {i}  # note" for i in range(5))
    source = f'def f():\n    """Doc\n\n    more doc.\n    """\n\n    # why\n{body}\n'
    path = tmp_path / "m.py"
    path.write_text(source)
    assert long_functions(path, limit=6) == []  # def line + 5 statements
    assert long_functions(path, limit=5) == [(f"{path}:1 f", 6)]


def test_no_function_longer_than_a_screen():
    found = [f for p in sorted(PACKAGE.rglob("*.py")) for f in long_functions(p)]
    assert found == [], f"functions over {MAX_CODE_LINES} code lines: {found}"
