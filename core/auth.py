"""Identity: roles, the request principal, JWT access tokens and the authentication
of each call against the account's current state."""

from __future__ import annotations

import asyncio
import contextvars
import enum
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from core.errors import PermissionDenied, Unauthenticated
from core.settings import DEV_JWT_SECRET, AuthSettings

JWT_ALGORITHM = "HS256"
JWT_LEEWAY_SECONDS = 30
_REQUIRED_CLAIMS = ["sub", "role", "iat", "exp", "iss", "aud"]


class Role(enum.StrEnum):
    ADMIN = "ADMIN"
    USER = "USER"
    VIEWER = "VIEWER"


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def reads_everything(self) -> bool:
        return self.role in (Role.ADMIN, Role.VIEWER)

    def require_writer(self) -> None:
        if self.role is Role.VIEWER:
            raise PermissionDenied("viewers have read-only access")

    def require_admin(self) -> None:
        if self.role is not Role.ADMIN:
            raise PermissionDenied("admin role required")


principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("authentication required")
    return principal


def check_secret(settings: AuthSettings) -> None:
    """Refuse to run in production with the development or a short JWT secret."""
    if settings.production and (settings.jwt_secret == DEV_JWT_SECRET or len(settings.jwt_secret.encode()) < 32):
        raise SystemExit("JOBMESH_JWT_SECRET must be set to a secret of at least 32 bytes when JOBMESH_PRODUCTION=true")


VERIFIED_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class TokenClaims:
    """What a verified access token says. ``role`` is what it was at issue time:
    authorization uses the account's current role instead."""

    user_id: str
    role: Role
    token_version: int


class TokenCodec:
    """Issues and verifies HS256 access tokens; the algorithm is pinned on decode."""

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.ttl_seconds = settings.access_token_ttl_seconds
        # Verified tokens, so a client's every call does not re-check the signature;
        # a hit is still refused once the token's exp (plus leeway) has passed.
        self._verified: dict[str, tuple[TokenClaims, float]] = {}

    def issue(self, user_id: str, role: Role, now: float | None = None, *, token_version: int = 0) -> str:
        issued = int(self._clock() if now is None else now)
        claims = {
            "sub": user_id,
            "role": role.value,
            "ver": token_version,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "iss": self._issuer,
            "aud": self._audience,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)

    def verify(self, token: str) -> TokenClaims:
        hit = self._verified.get(token)
        if hit is not None:
            if self._clock() <= hit[1] + JWT_LEEWAY_SECONDS:
                return hit[0]
            del self._verified[token]
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=JWT_LEEWAY_SECONDS,
                # exp is checked below against this codec's clock, the one the cache uses.
                options={"require": _REQUIRED_CLAIMS, "verify_exp": False},
            )
            exp = int(claims["exp"])
            if exp <= self._clock() - JWT_LEEWAY_SECONDS:
                raise jwt.ExpiredSignatureError("Signature has expired")
            # A token without a version is of version 0, every account's first.
            version = claims.get("ver", 0)
            if type(version) is not int:
                raise ValueError("ver must be an integer")
            verified = TokenClaims(user_id=str(claims["sub"]), role=Role(claims["role"]), token_version=version)
        except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError, KeyError) as exc:
            raise Unauthenticated("invalid or expired token") from exc
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (verified, float(claims["exp"]))
        return verified


def bearer_token(metadata: Sequence[tuple[str, Any]]) -> str:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")


@dataclass(frozen=True)
class AccountState:
    """What authentication needs to know of an account, as stored now."""

    role: Role
    token_version: int
    disabled: bool


def principal_for(claims: TokenClaims, state: AccountState | None) -> Principal:
    """A verified token is honoured while its account exists, is enabled and has not
    ended its sessions since (password change, disable: the version moved on). The
    role is the account's current one, so a demotion counts from the next call."""
    if state is None or state.disabled or state.token_version != claims.token_version:
        raise Unauthenticated("this session has ended; log in again")
    return Principal(user_id=claims.user_id, role=state.role)


AccountLookup = Callable[[str], Awaitable[AccountState | None]]
ACCOUNT_STATE_TTL_SECONDS = 1.0
ACCOUNT_STATE_CACHE_SIZE = 10_000


class AccountStates:
    """Each account's state for authentication, remembered for at most ``ttl`` seconds.

    Every authenticated call needs it; the memory keeps that to about one query per
    account and second. It is also how long another process of the mesh may act on a
    state this one changed: here ``forget`` is called right after a change, so it
    counts from the next call. Concurrent misses for one account share one query.
    """

    def __init__(
        self,
        lookup: AccountLookup,
        ttl_seconds: float = ACCOUNT_STATE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl_seconds
        self._clock = clock
        self._known: dict[str, tuple[float, AccountState | None]] = {}
        self._loading: dict[str, asyncio.Task[AccountState | None]] = {}

    async def get(self, user_id: str) -> AccountState | None:
        hit = self._known.get(user_id)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        task = self._loading.get(user_id)
        if task is None:
            task = asyncio.ensure_future(self._load(user_id))
            self._loading[user_id] = task
        # Shielded: a caller that goes away does not cancel the others' query.
        return await asyncio.shield(task)

    async def _load(self, user_id: str) -> AccountState | None:
        started = self._clock()
        try:
            state = await self._lookup(user_id)
        finally:
            mine = self._loading.get(user_id) is asyncio.current_task()
            if mine:
                del self._loading[user_id]
        # Kept only if no change was announced while the query ran: that change may
        # have been read before it was written.
        if mine:
            if len(self._known) >= ACCOUNT_STATE_CACHE_SIZE:
                self._known.clear()
            self._known[user_id] = (started, state)
        return state

    def forget(self, user_id: str) -> None:
        """The account just changed: the next call reads it afresh."""
        self._known.pop(user_id, None)
        self._loading.pop(user_id, None)


class Authenticator:
    """The interceptor's authenticate callable: bearer JWT → Principal, checked
    against the account's current role, token version and disabled flag."""

    def __init__(self, codec: TokenCodec, states: AccountStates) -> None:
        self._codec = codec
        self._states = states

    async def __call__(self, method: str, metadata: Sequence[tuple[str, Any]]) -> Principal:
        claims = self._codec.verify(bearer_token(metadata))
        return principal_for(claims, await self._states.get(claims.user_id))


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    """Refresh tokens are high-entropy, so a plain SHA-256 is enough to store them."""
    return hashlib.sha256(token.encode()).hexdigest()
