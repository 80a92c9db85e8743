"""The balancer's pick: least inflight, free slot, breaker allowed, ties rotated by offset."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.balancer import Candidate, pick


def c(key: str, inflight: int = 0, concurrency: int = 1, allowed: bool = True) -> Candidate:
    return Candidate(key, inflight, concurrency, allowed)


@pytest.mark.parametrize(
    ("candidates", "offset", "expected"),
    [
        # least inflight wins, wherever it sits
        ([c("a", 2, 4), c("b", 1, 4), c("c", 3, 4)], 0, "b"),
        ([c("a", 2, 4), c("b", 1, 4), c("c", 3, 4)], 2, "b"),
        ([c("a", 3, 4), c("b", 2, 4), c("c", 0, 4)], 0, "c"),
        # a full container is skipped even though it would sort first otherwise
        ([c("a", 1, 1), c("b", 3, 4)], 0, "b"),
        ([c("a", 4, 4), c("b", 5, 4), c("c", 3, 4)], 0, "c"),
        # a disallowed (breaker open) container is skipped even when idle
        ([c("a", 0, 4, allowed=False), c("b", 3, 4)], 0, "b"),
        ([c("a", 0, 1, allowed=False), c("b", 0, 1)], 0, "b"),
        # concurrency > 1: a busy container with a free slot is still a candidate
        ([c("a", 1, 1), c("b", 9, 10)], 0, "b"),
        ([c("a", 5, 10), c("b", 6, 10)], 1, "a"),
        # the only usable one
        ([c("a")], 0, "a"),
        ([c("a")], 7, "a"),
    ],
)
def test_pick_chooses(candidates: list[Candidate], offset: int, expected: str) -> None:
    chosen = pick(candidates, offset)
    assert chosen is not None
    assert chosen.key == expected


@pytest.mark.parametrize(
    "candidates",
    [
        [],
        [c("a", 1, 1)],
        [c("a", 2, 1)],  # over-full (concurrency lowered under it)
        [c("a", 0, 0)],  # no slots at all
        [c("a", allowed=False)],
        [c("a", 1, 1), c("b", 0, 1, allowed=False), c("c", 3, 3)],
    ],
)
def test_pick_none_when_nothing_fits(candidates: list[Candidate]) -> None:
    for offset in range(4):
        assert pick(candidates, offset) is None


def test_full_and_disallowed_never_picked_at_any_offset() -> None:
    candidates = [c("full", 2, 2), c("open", 0, 2, allowed=False), c("ok1", 1, 2), c("ok2", 1, 2)]
    picked = {pick(candidates, offset).key for offset in range(-5, 20)}  # type: ignore[union-attr]
    assert picked == {"ok1", "ok2"}


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(0, "a"), (1, "b"), (2, "c"), (3, "a"), (4, "b"), (5, "c"), (-1, "c")],
)
def test_tie_goes_to_first_at_or_after_offset(offset: int, expected: str) -> None:
    candidates = [c("a"), c("b"), c("c")]
    assert pick(candidates, offset).key == expected  # type: ignore[union-attr]


def test_tie_among_busy_containers_rotates_too() -> None:
    candidates = [c("a", 1, 3), c("b", 2, 3), c("c", 1, 3), c("d", 1, 3)]
    assert [pick(candidates, o).key for o in range(4)] == ["a", "c", "c", "d"]  # type: ignore[union-attr]


def test_rotating_offset_spreads_ties_evenly() -> None:
    candidates = [c(k, 1, 4) for k in "abcd"]
    counts = Counter(pick(candidates, offset).key for offset in range(1000))  # type: ignore[union-attr]
    assert counts == {"a": 250, "b": 250, "c": 250, "d": 250}


def test_offsets_landing_on_unusable_containers_go_to_the_next_tied_one() -> None:
    candidates = [c("a", 1, 4), c("busy", 2, 4), c("b", 1, 4), c("full", 4, 4)]
    counts = Counter(pick(candidates, offset).key for offset in range(400))  # type: ignore[union-attr]
    # offset on "busy" falls through to "b"; offset on "full" wraps to "a"
    assert counts == {"a": 200, "b": 200}


def test_rotating_offset_spreads_idle_containers_exactly_round_robin() -> None:
    candidates = [c(k, 0, 2) for k in "abc"]
    chosen = [pick(candidates, offset).key for offset in range(9)]  # type: ignore[union-attr]
    assert chosen == ["a", "b", "c"] * 3


def test_pick_returns_the_candidate_object_itself() -> None:
    b = c("b", 0, 1)
    assert pick([c("a", 1, 1), b], 0) is b
