"""The allow-list itself: verified for this SAQ, documented entry by entry, each one needed."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from tests.differential import allowed
from tests.differential.allowed import ALLOWED, ALWAYS, VERIFIED_WITH_SAQ
from tests.support import ROOT

DOC = ROOT / "docs" / "saq-compatibility.md"


def test_the_installed_saq_is_the_one_the_suite_was_verified_with() -> None:
    assert version("saq") == VERIFIED_WITH_SAQ, (
        f"SAQ {version('saq')} is installed; the differential suite and the allow-list were "
        f"verified with {VERIFIED_WITH_SAQ}: follow docs/saq-compatibility.md, 'Upgrading SAQ'"
    )


def test_the_doc_lists_exactly_the_allowances() -> None:
    """docs/saq-compatibility.md's allow-list table names each entry once, and no other."""
    section = DOC.read_text().split("## The allow-list", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
    assert sorted(documented) == sorted(entry.name for entry in ALLOWED)
    assert f"SAQ {VERIFIED_WITH_SAQ}" in DOC.read_text()


def test_every_scenario_only_allowance_is_declared_by_a_scenario() -> None:
    """An entry no scenario declares could never be needed: it would only hide differences."""
    names = {id(entry): name for name, entry in vars(allowed).items() if entry in ALLOWED}
    scenarios = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    for entry in ALLOWED:
        if entry not in ALWAYS:
            assert re.search(rf"allowed=\([^)]*\b{names[id(entry)]}\b", scenarios), entry.name
