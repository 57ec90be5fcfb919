"""The reorder buffer: pure code, driven with fixed and shuffled arrival orders."""

from __future__ import annotations

import itertools
import random

import pytest

from realtime.reorder import SeqReorderer


def deliver(reorderer: SeqReorderer[str], seqs: list[int]) -> list[str]:
    out: list[str] = []
    for seq in seqs:
        out.extend(reorderer.offer(seq, f"m{seq}"))
    return out


def test_messages_in_order_are_released_at_once() -> None:
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=10)
    assert reorderer.offer(11, "m11") == ["m11"]
    assert reorderer.offer(12, "m12") == ["m12"]
    assert reorderer.last_seq == 12
    assert reorderer.missing() is None


def test_a_message_ahead_of_a_gap_waits_until_the_gap_closes() -> None:
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=0)
    assert reorderer.offer(3, "m3") == []
    assert reorderer.offer(2, "m2") == []
    assert reorderer.missing() == (1, 1)
    assert reorderer.held == 2
    assert reorderer.offer(1, "m1") == ["m1", "m2", "m3"]
    assert reorderer.missing() is None
    assert reorderer.last_seq == 3


def test_duplicates_and_old_messages_are_dropped() -> None:
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=5)
    assert reorderer.offer(5, "old") == []
    assert reorderer.offer(3, "older") == []
    assert reorderer.offer(7, "m7") == []
    assert reorderer.offer(7, "again") == []
    assert reorderer.offer(6, "m6") == ["m6", "m7"]
    assert reorderer.offer(6, "again") == []


def test_missing_names_only_the_first_gap() -> None:
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=0)
    deliver(reorderer, [4, 9])
    assert reorderer.missing() == (1, 3)
    deliver(reorderer, [1, 2, 3])
    assert reorderer.missing() == (5, 8)


def test_filling_a_gap_from_the_database_releases_everything_in_order() -> None:
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=0)
    deliver(reorderer, [5, 4])
    # The database answers with what it holds after last_seq, live ones included.
    assert reorderer.fill([(3, "db3"), (1, "db1"), (2, "db2"), (4, "db4")]) == [
        "db1",
        "db2",
        "db3",
        "m4",
        "m5",
    ]
    assert reorderer.last_seq == 5


def test_skipping_gives_up_on_a_gap_and_releases_what_follows() -> None:
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=0)
    deliver(reorderer, [3, 4, 7])
    assert reorderer.skip_to(2) == ["m3", "m4"]
    assert reorderer.missing() == (5, 6)
    assert reorderer.skip_to(8) == []
    assert reorderer.held == 0
    assert reorderer.last_seq == 8
    assert reorderer.skip_to(1) == []
    assert reorderer.offer(9, "m9") == ["m9"]


@pytest.mark.parametrize("seed", range(50))
def test_any_arrival_order_is_released_in_seq_order(seed: int) -> None:
    rng = random.Random(seed)
    seqs = list(range(101, 301))
    arrivals = seqs + rng.sample(seqs, 40)  # with duplicates
    rng.shuffle(arrivals)
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=100)
    assert deliver(reorderer, arrivals) == [f"m{seq}" for seq in seqs]
    assert reorderer.missing() is None
    assert reorderer.held == 0


def test_every_permutation_of_a_short_burst_is_released_in_order() -> None:
    for order in itertools.permutations(range(1, 7)):
        reorderer: SeqReorderer[str] = SeqReorderer(last_seq=0)
        assert deliver(reorderer, list(order)) == [f"m{seq}" for seq in range(1, 7)]


@pytest.mark.parametrize("seed", range(20))
def test_lost_messages_recovered_by_fill_leave_nothing_behind(seed: int) -> None:
    rng = random.Random(seed)
    seqs = list(range(1, 101))
    lost = set(rng.sample(seqs, 10))
    arrivals = [seq for seq in seqs if seq not in lost]
    rng.shuffle(arrivals)
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=0)
    released = deliver(reorderer, arrivals)
    while (gap := reorderer.missing()) is not None:
        first, last = gap
        released += reorderer.fill((seq, f"m{seq}") for seq in range(first, last + 1))
    released += reorderer.fill((seq, f"m{seq}") for seq in sorted(lost) if seq > reorderer.last_seq)
    assert released == [f"m{seq}" for seq in seqs]


@pytest.mark.parametrize(
    ("last_seq", "arrivals", "released", "missing"),
    [
        pytest.param(0, [1, 2, 3], [1, 2, 3], None, id="in order"),
        pytest.param(0, [3, 1, 2], [1, 2, 3], None, id="one late"),
        pytest.param(0, [2, 3], [], (1, 1), id="the first missing"),
        pytest.param(0, [1, 3, 5], [1], (2, 2), id="two gaps, the first named"),
        pytest.param(0, [5, 4, 3, 2, 1], [1, 2, 3, 4, 5], None, id="reversed"),
        pytest.param(7, [8, 8, 7, 6], [8], None, id="duplicates and old ones dropped"),
        pytest.param(7, [10, 9], [], (8, 8), id="after a join's last_seq"),
    ],
)
def test_what_is_released_for_each_arrival_order(
    last_seq: int, arrivals: list[int], released: list[int], missing: tuple[int, int] | None
) -> None:
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=last_seq)

    assert deliver(reorderer, arrivals) == [f"m{seq}" for seq in released]
    assert reorderer.missing() == missing


@pytest.mark.parametrize(
    ("arrivals", "skip_to", "released", "last_seq"),
    [
        pytest.param([3, 4], 2, ["m3", "m4"], 4, id="skipping the gap releases what waited"),
        pytest.param([3, 6], 2, ["m3"], 3, id="up to the next gap"),
        pytest.param([3, 6], 4, [], 4, id="past a held one drops it"),
        pytest.param([], 5, [], 5, id="nothing held"),
        pytest.param([3], 0, [], 0, id="behind last_seq: nothing"),
    ],
)
def test_skipping_a_gap(
    arrivals: list[int], skip_to: int, released: list[str], last_seq: int
) -> None:
    reorderer: SeqReorderer[str] = SeqReorderer(last_seq=0)
    deliver(reorderer, arrivals)

    assert reorderer.skip_to(skip_to) == released
    assert reorderer.last_seq == last_seq
