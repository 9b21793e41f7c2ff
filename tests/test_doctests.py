"""The `>>>` examples in the docstrings of mtmoe/, app/, eval/ and tasks/, run as doctests.

A module is found by its text (a line starting with `>>>`), so a new example
runs without being listed here, and it is imported only when the test runs.
pytest's `--doctest-modules` is not used: it would import every .py file under
tests/ a second time (tests/fixtures/, train_fixture_tasks.py) and miss the
examples whenever pytest is given tests/ or one test file.
"""

import doctest
import importlib
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("mtmoe", "app", "eval", "tasks")
_EXAMPLE = re.compile(r"^\s*>>> ", re.MULTILINE)


def _modules_with_examples() -> list[str]:
    names = []
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    if not _EXAMPLE.search(f.read()):
                        continue
                module = os.path.relpath(os.path.join(folder, name[:-3]), REPO).replace(os.sep, ".")
                names.append(module.removesuffix(".__init__"))
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_examples_are_found():
    assert {"mtmoe.data.languages", "mtmoe.data.vocabulary", "app.text"} <= set(MODULES), MODULES


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    tests = [test for test in doctest.DocTestFinder().find(importlib.import_module(module_name)) if test.examples]
    assert tests, f"{module_name} has `>>>` lines outside any docstring doctest reads: move them into one"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
