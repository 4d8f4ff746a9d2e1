"""What the queue stands on, decided without I/O: the SAQ release its Redis moves were verified
with, and what a Redis lacks, said in one line.

Catches: a SAQ upgrade that did not go through docs/saq-compatibility.md (the installed SAQ
differs from `SAQ_VERIFIED`), a start-up that accepts another SAQ, and a Redis below the
floor, without a command, refusing undeclared keys in scripts or in Cluster mode accepted or
named wrongly.
"""

from __future__ import annotations

import importlib.metadata

import pytest

from app.jobs.queue import floor
from app.jobs.queue.floor import (
    SAQ_VERIFIED,
    FloorError,
    check_saq,
    floor_line,
    redis_problems,
    saq_problem,
)


def test_the_installed_saq_is_the_one_the_moves_were_verified_with() -> None:
    assert importlib.metadata.version("saq") == SAQ_VERIFIED


def test_another_saq_is_refused_at_start_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    check_saq()  # the verified one
    monkeypatch.setattr(floor.importlib.metadata, "version", lambda _: "0.26.5")
    with pytest.raises(FloorError) as refused:
        check_saq()
    assert str(refused.value) == (
        "SAQ 0.26.5 is installed: this project's Redis moves were verified with SAQ "
        f"{SAQ_VERIFIED} (docs/saq-compatibility.md says how to upgrade)"
    )
    assert saq_problem(SAQ_VERIFIED) is None


@pytest.mark.parametrize(
    ("version", "missing", "undeclared", "cluster", "needs"),
    [
        ((7, 0, 15), [], True, False, None),
        ((6, 2, 0), [], True, False, None),
        ((6, 0, 5), [], True, False, "6.2 or later (LMOVE)"),
        ((7, 2, 4), ["lmove", "lpos"], True, False, "the commands LMOVE, LPOS"),
        ((7, 2, 0), [], False, False, "scripts that may read keys they do not declare"),
        ((7, 0, 15), [], True, True, "a single Redis, not a Cluster"),
        ((6, 0, 5), ["lmove"], True, True,
         "6.2 or later (LMOVE); the commands LMOVE; a single Redis, not a Cluster"),
    ],
)  # fmt: skip
def test_what_a_redis_lacks_is_named_in_one_line(
    version: tuple[int, ...], missing: list[str], undeclared: bool, cluster: bool, needs: str | None
) -> None:
    problems = redis_problems(version, missing, undeclared, cluster)
    if needs is None:
        assert problems == []
        return
    line = floor_line("redis://cache:6379/0", version, problems)
    shown = ".".join(map(str, version))
    assert line == f"Redis {shown} at redis://cache:6379/0: this process needs {needs}"
