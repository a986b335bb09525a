"""A run's pending live output keeps only its newest bytes, split between characters;
a reader of the live log is told, on a line of its own, how much output it missed."""

from __future__ import annotations

from core.domain import LogStream
from core.runlog import Continuity, LogEntry, truncation_marker
from worker_svc.live_output import PendingOutput

STDOUT, STDERR = LogStream.STDOUT, LogStream.STDERR


def test_pending_output_keeps_the_newest_bytes_and_counts_the_rest() -> None:
    pending = PendingOutput(cap=100, max_entries=50, entry_bytes=30)
    for i in range(1000):
        pending.add(STDOUT, f"{i:09d}\n".encode())
        assert pending.size <= 100
    dropped, entries = pending.take()
    data = b"".join(d for _, d in entries)
    assert data == b"".join(f"{i:09d}\n".encode() for i in range(990, 1000))
    assert dropped == 10_000 - 100
    assert all(len(d) <= 30 for _, d in entries)
    assert not pending and pending.take() == (0, [])


def test_one_huge_write_keeps_its_tail_and_drops_what_was_pending() -> None:
    pending = PendingOutput(cap=100, max_entries=50, entry_bytes=64)
    pending.add(STDERR, b"old\n")
    pending.add(STDOUT, b"x" * 1000 + b"end\n")
    dropped, entries = pending.take()
    assert [k for k, _ in entries] == [STDOUT, STDOUT]
    assert b"".join(d for _, d in entries) == b"x" * 96 + b"end\n"
    assert dropped == 4 + 904


def test_splits_and_cuts_fall_between_characters() -> None:
    pending = PendingOutput(cap=10, max_entries=50, entry_bytes=4)
    pending.add(STDOUT, "ééééé€".encode())  # 2 bytes each, then 3
    _, entries = pending.take()
    for _, data in entries:
        data.decode()  # each entry is whole characters
        assert len(data) <= 4
    assert b"".join(d for _, d in entries).decode().endswith("€")
    pending.add(STDOUT, "€€€€".encode())  # 12 bytes: the first one cannot stay, nor half of it
    dropped, entries = pending.take()
    assert b"".join(d for _, d in entries).decode() == "€€€" and dropped == 3


def test_streams_take_turns_in_separate_entries_and_their_number_is_capped() -> None:
    pending = PendingOutput(cap=1000, max_entries=4, entry_bytes=100)
    for i in range(10):
        pending.add(STDOUT if i % 2 else STDERR, f"{i}".encode())
    dropped, entries = pending.take()
    assert entries == [(STDERR, b"6"), (STDOUT, b"7"), (STDERR, b"8"), (STDOUT, b"9")]
    assert dropped == 6


def entry(offset: int | None, data: str, kind: LogStream | str = STDOUT) -> LogEntry:
    return LogEntry("0-1", kind, data, offset)


def test_a_reader_is_told_what_it_missed_on_a_line_of_its_own() -> None:
    reader = Continuity()
    assert reader.marker(entry(0, "a\n")) == ""
    assert reader.marker(entry(None, "RUNNING", "status")) == ""
    assert reader.marker(entry(2, "bé")) == ""
    assert reader.marker(entry(5, "c\n")) == ""  # "bé" is 3 bytes
    assert reader.marker(entry(107, "tail\n")) == truncation_marker(100)
    assert reader.marker(entry(200, "x")) == truncation_marker(88)
    assert reader.marker(entry(300, "y\n")) == "\n" + truncation_marker(99)
    assert truncation_marker(100) == "[output truncated: 100 bytes dropped]\n"


def test_a_late_joiner_is_told_first() -> None:
    assert Continuity().marker(entry(1 << 30, "last\n")) == truncation_marker(1 << 30)
