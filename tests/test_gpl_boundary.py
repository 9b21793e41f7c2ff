"""The README's licence section says one module imports the translate-toolkit (GPL-3.0-or-later): keep it true."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent


def imports_translate_toolkit(path: pathlib.Path) -> bool:
    """Whether the file imports the `translate` package (the toolkit), at any depth of the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        if any(name == "translate" or name.startswith("translate.") for name in names):
            return True
    return False


def test_only_l10n_formats_imports_the_translate_toolkit():
    files = [p for folder in ("mtmoe", "app", "eval", "tasks", "benchmarks") for p in (REPO / folder).rglob("*.py")
             if not any(part.startswith(".") for part in p.relative_to(REPO).parts)]  # not the peers' venv
    assert len(files) > 50
    importing = sorted(str(p.relative_to(REPO)) for p in files if imports_translate_toolkit(p))
    assert importing == ["mtmoe/l10n_formats.py"]
    # `from mtmoe import translate` and `mtmoe.translate` are this project's Translator, not the toolkit.
    assert not imports_translate_toolkit(REPO / "eval" / "per_language_bleu.py")
