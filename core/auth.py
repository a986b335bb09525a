"""Identity: roles, the request principal, JWT access tokens and password hashing."""

from __future__ import annotations

import contextvars
import enum
import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher as _Argon2
from argon2 import exceptions as argon2_errors

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


class TokenCodec:
    """Issues and verifies HS256 access tokens; the algorithm is pinned on decode."""

    def __init__(self, settings: AuthSettings) -> None:
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.ttl_seconds = settings.access_token_ttl_seconds
        # Verified tokens, so a client's every call does not re-check the signature;
        # a hit is still refused once the token's exp (plus leeway) has passed.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def issue(self, user_id: str, role: Role, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {
            "sub": user_id,
            "role": role.value,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "iss": self._issuer,
            "aud": self._audience,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)

    def verify(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None:
            if time.time() <= hit[1] + JWT_LEEWAY_SECONDS:
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
                options={"require": _REQUIRED_CLAIMS},
            )
            principal = Principal(user_id=str(claims["sub"]), role=Role(claims["role"]))
        except (jwt.InvalidTokenError, ValueError, KeyError) as exc:
            raise Unauthenticated("invalid or expired token") from exc
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]))
        return principal


def bearer_token(metadata: Sequence[tuple[str, Any]]) -> str:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")


class Authenticator:
    """The interceptor's authenticate callable: bearer JWT → Principal."""

    def __init__(self, codec: TokenCodec) -> None:
        self._codec = codec

    def __call__(self, method: str, metadata: Sequence[tuple[str, Any]]) -> Principal:
        return self._codec.verify(bearer_token(metadata))


class PasswordHasher:
    """argon2id with library defaults; ``needs_rehash`` tells when parameters changed."""

    def __init__(self) -> None:
        self._argon = _Argon2()

    def hash(self, password: str) -> str:
        return self._argon.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        try:
            return bool(self._argon.verify(stored_hash, password))
        except (argon2_errors.VerificationError, argon2_errors.InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return bool(self._argon.check_needs_rehash(stored_hash))


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    """Refresh tokens are high-entropy, so a plain SHA-256 is enough to store them."""
    return hashlib.sha256(token.encode()).hexdigest()
