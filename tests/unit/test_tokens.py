"""Access tokens: a verified token is remembered, but never past its expiry."""

from __future__ import annotations

import time

import pytest

from core.auth import JWT_LEEWAY_SECONDS, Role, TokenCodec
from core.errors import Unauthenticated
from core.settings import AuthSettings


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def codec(clock: FakeClock | None = None) -> TokenCodec:
    settings = AuthSettings(jwt_secret="unit-secret-" + "y" * 32, access_token_ttl_seconds=60)
    return TokenCodec(settings) if clock is None else TokenCodec(settings, clock)


def test_a_remembered_token_still_expires() -> None:
    clock = FakeClock()
    tokens = codec(clock)
    # Issued so that exp + leeway is 1 s from now.
    token = tokens.issue("user-1", Role.USER, now=clock.now - 60 - JWT_LEEWAY_SECONDS + 1)
    assert tokens.verify(token).user_id == "user-1"
    assert tokens.verify(token).role is Role.USER  # from memory
    clock.now += 1.2
    with pytest.raises(Unauthenticated):
        tokens.verify(token)


def test_an_expired_token_is_refused_on_first_sight() -> None:
    clock = FakeClock()
    token = codec(clock).issue("user-3", Role.USER)
    clock.now += 60 + JWT_LEEWAY_SECONDS + 1
    with pytest.raises(Unauthenticated):
        codec(clock).verify(token)


def test_a_tampered_or_foreign_token_is_refused() -> None:
    tokens = codec()
    token = tokens.issue("user-2", Role.ADMIN)
    assert tokens.verify(token).role is Role.ADMIN
    head, body, signature = token.split(".")
    with pytest.raises(Unauthenticated):
        tokens.verify(f"{head}.{body}.{signature[::-1]}")
    other = TokenCodec(AuthSettings(jwt_secret="other-secret-" + "z" * 32))
    with pytest.raises(Unauthenticated):
        other.verify(token)
