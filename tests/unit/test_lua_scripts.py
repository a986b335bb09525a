"""The Lua scripts of the Redis protocol say what they take: each is headed by its KEYS
and ARGV, the header matches what the script reads, and every call is checked against
the header before it is sent (so any test that runs a caller off its script's header
fails)."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
from redis.asyncio import Redis

from core import keys
from core.dispatch_queue import SCRIPTS, Layout, RegisteredScript, header_layouts

LITERAL = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
COMPUTED = re.compile(r"\b(KEYS|ARGV)\[(?!\d+\])")
KEY_PATTERN = re.compile(r"jobmesh:(?:\{[a-z]+(?::<[a-z]+>)?\}:)?[a-z]+")


def body(source: str) -> str:
    """The script without its comments."""
    return "\n".join(line.split("--", 1)[0] for line in source.splitlines())


def test_every_script_file_is_one_the_protocol_loads() -> None:
    shipped = {p.name.removesuffix(".lua") for p in (files("core") / "lua").iterdir() if p.name.endswith(".lua")}
    assert shipped == set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_header_documents_every_key_and_argument_the_script_reads(name: str) -> None:
    script = SCRIPTS[name]
    code = body(script.source)
    layouts = {"KEYS": script.keys, "ARGV": script.argv}
    assert script.keys.fixed or script.keys.repeated, "a script that touches no key has no business in Redis"
    used = {(table, int(n)) for table, n in LITERAL.findall(code)}
    for table, n in used:
        layout = layouts[table]
        assert n <= len(layout.fixed) or layout.repeated, f"{name}.lua reads {table}[{n}], undocumented"
    for table, layout in layouts.items():
        for n, position in enumerate(layout.fixed, start=1):
            assert (table, n) in used, f"{name}.lua documents {table}[{n}] ({position}) but never reads it"
        if layout.repeated is None:
            assert not any(t == table for t in COMPUTED.findall(code)), (
                f"{name}.lua reads {table} by a computed index: its header must document the repeated group"
            )


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_keys_a_header_names_are_the_keys_of_core_keys(name: str) -> None:
    header = "\n".join(line for line in SCRIPTS[name].source.splitlines() if line.startswith("--"))
    named = set(KEY_PATTERN.findall(header))
    assert named, f"{name}.lua names none of the keys it touches"
    assert keys.__doc__ is not None
    assert named <= set(KEY_PATTERN.findall(keys.__doc__))


def test_a_header_out_of_order_or_with_an_unmarked_group_is_refused() -> None:
    assert header_layouts("-- KEYS[1]  queue  the queue\n-- ARGV[1..]  run...  per run\nreturn 1\n") == (
        Layout(("queue",), None),
        Layout((), "run..."),
    )
    for header in ("-- KEYS[2]  queue  x\n", "-- KEYS[1..]  log  x\n", "-- KEYS[1..]  log...  x\n-- KEYS[2]  y  z\n"):
        with pytest.raises(ValueError):
            header_layouts(header)


async def test_a_call_off_the_header_is_refused_before_it_reaches_redis() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there: the call must not get that far
    pop_many = RegisteredScript(client, SCRIPTS["pop_many"])  # KEYS: queue, processing; ARGV: count
    try:
        with pytest.raises(AssertionError, match=r"pop_many\.lua"):
            await pop_many(keys=["jobmesh:queue:default"], args=[1])
        with pytest.raises(AssertionError, match=r"pop_many\.lua"):
            await pop_many(keys=["jobmesh:queue:default", "jobmesh:processing:w"], args=[])
        with pytest.raises(AssertionError, match=r"pop_many\.lua"):
            await pop_many(keys=["jobmesh:queue:default", "jobmesh:processing:w", "jobmesh:inflight"], args=[1])
    finally:
        await client.aclose()
