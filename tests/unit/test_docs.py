"""The API reference (docs/reference/) covers every public name.

The strict site build (``python3 dev.py docs``) fails on a reference to a
name that does not exist; this test fails on a public name that has no
reference, so a new export cannot ship undocumented.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import corepool

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def _directives() -> set[str]:
    """The objects rendered from docstrings: each ``::: dotted.name`` line."""
    names: set[str] = set()
    for page in REFERENCE.glob("*.md"):
        names.update(re.findall(r"^::: (\S+)$", page.read_text(), flags=re.MULTILINE))
    return names


def test_every_public_name_has_a_reference_entry() -> None:
    missing = [name for name in corepool.__all__ if f"corepool.{name}" not in _directives()]
    assert not missing, f"add '::: corepool.<name>' to a page of docs/reference/ for: {missing}"


@pytest.mark.parametrize(
    ("module", "page"),
    [
        ("corepool.futures", "futures.md"),
        ("corepool.multiprocessing", "multiprocessing.md"),
        ("corepool.joblib", "joblib.md"),
    ],
)
def test_every_name_of_a_face_is_on_its_page(module: str, page: str) -> None:
    # corepool's own objects are rendered (:::); the standard library's
    # re-exported ones are named in the text, with a link to its docs.
    text = (REFERENCE / page).read_text()
    missing = [
        name
        for name in importlib.import_module(module).__all__
        if f"`{name}`" not in text and not re.search(rf"^::: {module}\S*\.{name}$", text, re.M)
    ]
    assert not missing, f"name these in docs/reference/{page}: {missing}"


def test_every_reference_directive_names_a_public_module() -> None:
    # Pages point at public paths (corepool.Pool, not corepool.pool.Pool), so
    # that a private module can move without breaking the site's links.
    private = sorted(
        name
        for name in _directives()
        if any(part.startswith("_") and not part.startswith("__") for part in name.split("."))
    )
    assert private == ["corepool._calls.TaskFuture"]


def test_every_demo_scenario_has_a_guide() -> None:
    # Each scenario of `corepool demo` is a module of corepool._demo that a
    # guide includes (the strict build fails if the included file is gone).
    from corepool._demo import SCENARIOS

    guides = " ".join(page.read_text() for page in (REFERENCE.parent / "guides").glob("*.md"))
    missing = [s.name for s in SCENARIOS if f'"src/corepool/_demo/{s.name}.py"' not in guides]
    assert not missing, f"include these demo modules in a guide of docs/guides/: {missing}"
