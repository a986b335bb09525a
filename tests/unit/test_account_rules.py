"""Account rules without services: the throttle's delays, whom a call comes from,
how long an account's state is remembered, the bound on password checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from core.auth import AccountState, AccountStates, Role, TokenClaims, principal_for
from core.errors import ResourceExhausted, Unauthenticated
from core.passwords import HashingPool
from core.peers import client_address, client_key, forwarded_for, grpc_peer_host, parse_networks
from core.throttle import LoginCharge, LoginThrottle, account_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_delays_grow_after_the_free_attempts_and_stop_at_the_cap() -> None:
    throttle = LoginThrottle(free_failures=5, first_delay_seconds=1.0, max_delay_seconds=900.0)
    assert [throttle.delay(n) for n in range(12)] == [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64]
    assert throttle.delay(15) == 900 and throttle.delay(10_000) == 900


def test_an_attempt_waits_from_the_last_checked_one() -> None:
    throttle = LoginThrottle()
    assert throttle.wait(4, T0, T0) == 0  # still free
    assert throttle.wait(5, T0, T0 + timedelta(seconds=0.25)) == 0.75
    assert throttle.wait(5, T0, T0 + timedelta(seconds=1)) == 0
    assert throttle.wait(7, T0, T0 + timedelta(seconds=1)) == 3
    # What a refused attempt is told: the next one's delay, this one counted.
    assert LoginCharge(failures=6, admitted=False).retry_after(throttle) == 2
    assert LoginCharge(failures=99, admitted=False).retry_after(throttle) == 900


def test_the_account_half_of_a_pair_is_the_same_for_any_email() -> None:
    assert account_key("nobody@example.com") != account_key("ada@example.com")
    assert len(account_key("x" * 10_000)) == len(account_key("a@b.c")) == 64


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:5000", "127.0.0.1"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),
        ("unix:/run/jobmesh.sock", "unix:/run/jobmesh.sock"),
    ],
)
def test_grpc_peer_host(peer: str, host: str) -> None:
    assert grpc_peer_host(peer) == host


def test_only_trusted_proxies_say_whom_they_forward_for() -> None:
    loopback = parse_networks("127.0.0.0/8,::1")
    assert client_address("127.0.0.1", ["198.51.100.7"], loopback) == "198.51.100.7"
    assert client_address("::ffff:127.0.0.1", ["198.51.100.7"], loopback) == "198.51.100.7"
    # Not a trusted peer: it is the client, whatever it claims.
    assert client_address("203.0.113.5", ["198.51.100.7"], loopback) == "203.0.113.5"
    # A chain: walk back past trusted hops only; the client's own claims stay unread.
    proxies = parse_networks("10.0.0.0/8")
    assert client_address("10.0.0.2", ["1.1.1.1", "198.51.100.7", "10.0.0.9"], proxies) == "198.51.100.7"
    assert client_address("10.0.0.2", ["not an address"], proxies) == "10.0.0.2"
    assert client_address("10.0.0.2", [], proxies) == "10.0.0.2"
    assert forwarded_for([("x-forwarded-for", "1.1.1.1, 2.2.2.2"), ("X-Forwarded-For", b"3.3.3.3")]) == [
        "1.1.1.1",
        "2.2.2.2",
        "3.3.3.3",
    ]


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("198.51.100.7") == "198.51.100.7"


def test_a_token_is_honoured_only_while_its_account_is_as_issued() -> None:
    claims = TokenClaims("u1", Role.ADMIN, token_version=3)
    assert principal_for(claims, AccountState(Role.VIEWER, 3, False)).role is Role.VIEWER
    for state in (None, AccountState(Role.ADMIN, 4, False), AccountState(Role.ADMIN, 3, True)):
        with pytest.raises(Unauthenticated):
            principal_for(claims, state)


async def test_account_states_are_remembered_briefly_and_forgotten_on_change() -> None:
    now = [0.0]
    stored = {"u1": AccountState(Role.ADMIN, 0, False)}
    reads: list[str] = []

    async def lookup(user_id: str) -> AccountState | None:
        reads.append(user_id)
        await asyncio.sleep(0)
        return stored.get(user_id)

    states = AccountStates(lookup, ttl_seconds=1.0, clock=lambda: now[0])
    results = await asyncio.gather(*(states.get("u1") for _ in range(5)))
    assert {r.role for r in results if r} == {Role.ADMIN} and reads == ["u1"]  # one query for all five
    stored["u1"] = AccountState(Role.VIEWER, 0, False)
    now[0] = 0.5
    assert (await states.get("u1")) == AccountState(Role.ADMIN, 0, False)  # remembered
    now[0] = 1.0
    assert (await states.get("u1")) == AccountState(Role.VIEWER, 0, False)  # expired
    stored["u1"] = AccountState(Role.USER, 0, False)
    states.forget("u1")
    assert (await states.get("u1")) == AccountState(Role.USER, 0, False)  # at once
    assert await states.get("nobody") is None


async def test_password_checks_beyond_the_pool_and_its_queue_are_refused() -> None:
    pool = HashingPool(threads=1, queue=1)
    try:
        stored = await pool.hash("correct horse battery")
        running = [asyncio.ensure_future(pool.verify(stored, "correct horse battery")) for _ in range(2)]
        await asyncio.sleep(0)
        assert not pool.has_room()
        with pytest.raises(ResourceExhausted):
            await pool.verify(stored, "wrong")
        assert await asyncio.gather(*running) == [True, True]
        assert pool.has_room()
        assert await pool.verify(stored, "wrong") is False
    finally:
        pool.close()
