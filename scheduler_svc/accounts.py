"""Accounts: sign-up, login with throttling, refresh-token rotation, roles."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from core import validation
from core.auth import PasswordHasher, Principal, Role, TokenCodec, hash_refresh_token, new_refresh_token
from core.domain import User, utcnow
from core.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted, Unauthenticated, Violations
from core.ids import new_id
from core.settings import AuthSettings
from db.repositories.users import UserRepository

log = logging.getLogger(__name__)

FREE_FAILURES = 5
BASE_LOCK_SECONDS = 30
MAX_LOCK_SECONDS = 3600
# Verifying against a dummy hash when the email is unknown keeps the answer's
# timing from telling whether the account exists.
_DUMMY_PASSWORD = "jobmesh-dummy-password"


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str
    user: User
    expires_in: int


def lock_seconds(failures: int) -> int:
    """Exponential lock-out after FREE_FAILURES: 30 s, 60 s, 120 s ... capped at 1 h."""
    if failures < FREE_FAILURES:
        return 0
    return int(min(MAX_LOCK_SECONDS, BASE_LOCK_SECONDS * 2 ** (failures - FREE_FAILURES)))


class Accounts:
    def __init__(self, users: UserRepository, codec: TokenCodec, settings: AuthSettings) -> None:
        self._users = users
        self._codec = codec
        self._hasher = PasswordHasher()
        self._dummy_hash = self._hasher.hash(_DUMMY_PASSWORD)
        self._refresh_ttl = timedelta(seconds=settings.refresh_token_ttl_seconds)

    async def _session(self, user: User, now: datetime, family_id: str | None = None) -> Session:
        refresh = new_refresh_token()
        await self._users.store_refresh(
            user.id, family_id or new_id(), hash_refresh_token(refresh), now, now + self._refresh_ttl
        )
        return Session(self._codec.issue(user.id, user.role), refresh, user, self._codec.ttl_seconds)

    async def sign_up(self, username: str, email: str, password: str) -> Session:
        email = validation.normalize_email(email)
        validation.validate_signup(username, email, password)
        now = utcnow()
        user = await self._users.create(username, email, self._hasher.hash(password), Role.USER, now)
        return await self._session(user, now)

    async def login(self, email: str, password: str) -> Session:
        email = validation.normalize_email(email)
        v = Violations()
        if not email:
            v.add("email", "is required")
        if not password:
            v.add("password", "is required")
        v.raise_if_any()
        now = utcnow()
        user = await self._users.by_email(email)
        if user is None:
            self._hasher.verify(self._dummy_hash, password)
            raise Unauthenticated("invalid email or password")
        if user.locked_until is not None and user.locked_until > now:
            wait = int((user.locked_until - now).total_seconds()) + 1
            raise ResourceExhausted(f"too many failed logins; try again in {wait} s")
        if not self._hasher.verify(user.password_hash, password):
            failures = user.failed_logins + 1
            seconds = lock_seconds(failures)
            await self._users.record_failure(user.id, failures, now + timedelta(seconds=seconds) if seconds else None)
            raise Unauthenticated("invalid email or password")
        new_hash = self._hasher.hash(password) if self._hasher.needs_rehash(user.password_hash) else None
        await self._users.record_success(user.id, new_hash)
        return await self._session(user, now)

    async def refresh(self, refresh_token: str) -> Session:
        if not refresh_token:
            raise InvalidArgument(FieldViolation("refresh_token", "is required"))
        now = utcnow()
        spent = await self._users.spend_refresh(hash_refresh_token(refresh_token), now)
        if spent is None:
            raise Unauthenticated("invalid, expired or reused refresh token")
        user_id, family_id = spent
        user = await self._users.by_id(user_id)
        if user is None:
            raise Unauthenticated("invalid refresh token")
        return await self._session(user, now, family_id)

    async def current_user(self, principal: Principal) -> User:
        user = await self._users.by_id(principal.user_id)
        if user is None:
            raise NotFound("account not found")
        return user

    async def list_users(self, principal: Principal, page_size: int, offset: int) -> tuple[list[User], int]:
        principal.require_admin()
        return await self._users.list(page_size, offset)

    async def set_role(self, principal: Principal, user_id: str, role: Role | None) -> User:
        principal.require_admin()
        if role is None:
            raise InvalidArgument(FieldViolation("role", "must be ROLE_ADMIN, ROLE_USER or ROLE_VIEWER"))
        user = await self._users.set_role(user_id, role)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    async def ensure_admin(self, email: str, password: str) -> None:
        """Create the configured first admin once (idempotent across restarts and instances)."""
        if not email or not password:
            return
        email = validation.normalize_email(email)
        username = email.split("@", 1)[0][:64] or "admin"
        if len(username) < 3:
            username = f"{username}-admin"
        created = await self._users.ensure_admin(email, username, self._hasher.hash(password), utcnow())
        if created:
            log.info("created admin account %s", email)
