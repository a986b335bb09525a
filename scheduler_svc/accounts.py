"""Accounts: sign-up, throttled login, refresh-token rotation, roles, password
changes and disabled accounts, with every session-ending change effective at once."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from core import validation
from core.auth import AccountStates, Principal, Role, TokenCodec, hash_refresh_token, new_refresh_token
from core.domain import Session, User, utcnow
from core.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Violations,
)
from core.ids import new_id
from core.paging import Page, paginate
from core.passwords import HashingPool
from core.settings import AuthSettings
from core.throttle import FORGET_AFTER, LoginThrottle, account_key
from db.repositories.login_throttle import LoginThrottleRepository
from db.repositories.users import UserRepository

log = logging.getLogger(__name__)

# Verifying against a dummy hash when the email is unknown keeps the answer's
# timing from telling whether the account exists.
_DUMMY_PASSWORD = "jobmesh-dummy-password"
WRONG_CREDENTIALS = "invalid email or password"
MAX_EMAIL_LENGTH = 254


def _throttled(wait: int) -> ResourceExhausted:
    return ResourceExhausted(f"too many failed logins; try again in {wait} s", reason="LOGIN_THROTTLED")


def _busy() -> ResourceExhausted:
    return ResourceExhausted("too many password checks in progress; try again shortly", reason="HASHING_BUSY")


class Accounts:
    def __init__(
        self,
        users: UserRepository,
        attempts: LoginThrottleRepository,
        codec: TokenCodec,
        states: AccountStates,
        settings: AuthSettings,
    ) -> None:
        self._users = users
        self._attempts = attempts
        self._codec = codec
        self._states = states
        self._passwords = HashingPool(settings.password_hash_threads, settings.password_hash_queue)
        self._dummy_hash = self._passwords.hash_now(_DUMMY_PASSWORD)
        self._refresh_ttl = timedelta(seconds=settings.refresh_token_ttl_seconds)
        self._throttle = LoginThrottle(
            settings.login_free_failures, settings.login_delay_seconds, settings.login_max_delay_seconds
        )

    def close(self) -> None:
        self._passwords.close()

    async def _session(self, user: User, now: datetime, family_id: str | None = None) -> Session:
        refresh = new_refresh_token()
        await self._users.store_refresh(
            user.id,
            family_id or new_id(),
            hash_refresh_token(refresh),
            now,
            now + self._refresh_ttl,
            user.token_version,
        )
        access = self._codec.issue(user.id, user.role, token_version=user.token_version)
        return Session(access, refresh, user, self._codec.ttl_seconds)

    async def sign_up(self, username: str, email: str, password: str) -> Session:
        email = validation.normalize_email(email)
        validation.validate_signup(username, email, password)
        now = utcnow()
        password_hash = await self._passwords.hash(password)
        user = await self._users.create(username, email, password_hash, Role.USER, now)
        return await self._session(user, now)

    async def _check_password(self, email: str, client: str, stored_hash: str | None, password: str) -> bool:
        """One throttled password check for (email, client): charged first, then
        verified only if the throttle lets it through. ``stored_hash`` None (no such
        account) checks a dummy hash, so unknown and existing emails are answered
        alike, in the same time. Raises ResourceExhausted while throttled or busy."""
        account = account_key(email)
        charge = await self._attempts.charge(account, client, utcnow, self._throttle.wait)
        if not charge.admitted:
            raise _throttled(charge.retry_after(self._throttle))
        if not self._passwords.has_room():
            await self._attempts.refund(account, client)  # never checked: not a guess
            raise _busy()
        matches = await self._passwords.verify(stored_hash or self._dummy_hash, password)
        if matches and stored_hash is not None:
            await self._attempts.clear(account, client)
            return True
        return False

    async def login(self, email: str, password: str, client: str) -> Session:
        email = validation.normalize_email(email)
        v = Violations()
        if not email:
            v.add("email", "is required")
        elif len(email) > MAX_EMAIL_LENGTH:
            v.add("email", f"must be at most {MAX_EMAIL_LENGTH} characters")
        if not password:
            v.add("password", "is required")
        v.raise_if_any()
        user = await self._users.by_email(email)
        # A disabled account is checked and answered as an unknown email: neither the
        # answer nor the throttle tells whether its password was right.
        stored_hash = user.password_hash if user is not None and not user.disabled else None
        if not await self._check_password(email, client, stored_hash, password) or user is None:
            raise Unauthenticated(WRONG_CREDENTIALS)
        if self._passwords.needs_rehash(user.password_hash) and self._passwords.has_room():
            await self._users.set_password_hash(user.id, await self._passwords.hash(password))
        return await self._session(user, utcnow())

    async def refresh(self, refresh_token: str) -> Session:
        if not refresh_token:
            raise InvalidArgument(FieldViolation("refresh_token", "is required"))
        now = utcnow()
        spent = await self._users.spend_refresh(hash_refresh_token(refresh_token), now)
        if spent is None:
            raise Unauthenticated("invalid, expired or reused refresh token")
        user_id, family_id, token_version = spent
        user = await self._users.by_id(user_id)
        # Issued before the account's sessions ended (a change that raced this refresh).
        if user is None or user.disabled or user.token_version != token_version:
            raise Unauthenticated("invalid, expired or reused refresh token")
        return await self._session(user, now, family_id)

    async def current_user(self, principal: Principal) -> User:
        user = await self._users.by_id(principal.user_id)
        if user is None:
            raise NotFound("account not found")
        return user

    async def list_users(self, principal: Principal, page_size: int, page_token: str) -> Page[User]:
        principal.require_admin()
        pager = paginate(page_size, page_token, "users")
        users, total = await self._users.list(pager.limit, pager.offset)
        return pager.page(users, total)

    async def set_role(self, principal: Principal, user_id: str, role: Role | None) -> User:
        """Effective from the account's next call (authorization reads the stored
        role); its access tokens stay valid, its refresh tokens are revoked."""
        principal.require_admin()
        if role is None:
            raise InvalidArgument(FieldViolation("role", "must be ROLE_ADMIN, ROLE_USER or ROLE_VIEWER"))
        user = await self._users.change(user_id, utcnow(), {"role": role.value}, end_refresh_tokens=True)
        self._states.forget(user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    async def set_disabled(self, principal: Principal, user_id: str, disabled: bool) -> User:
        """Disabling ends every session of the account at once; enabling lets it log in again."""
        principal.require_admin()
        if disabled and user_id == principal.user_id:
            raise FailedPrecondition("an admin cannot disable their own account")
        user = await self._users.change(
            user_id, utcnow(), {"disabled": disabled}, end_access_tokens=disabled, end_refresh_tokens=disabled
        )
        self._states.forget(user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    async def change_password(self, principal: Principal, current: str, new: str, client: str) -> Session:
        """The caller's own password; ends every session of the account and returns a
        new one. Guesses at ``current`` are throttled like logins."""
        v = Violations()
        if not current:
            v.add("current_password", "is required")
        validation.check_password(v, new, "new_password")
        if current and new == current:
            v.add("new_password", "must differ from current_password")
        v.raise_if_any()
        user = await self._users.by_id(principal.user_id)
        if user is None or user.disabled:
            raise Unauthenticated("this session has ended; log in again")
        if not await self._check_password(user.email, client, user.password_hash, current):
            raise InvalidArgument(FieldViolation("current_password", "does not match the account's password"))
        if not self._passwords.has_room():
            raise _busy()
        new_hash = await self._passwords.hash(new)
        now = utcnow()
        changed = await self._users.change(
            user.id, now, {"password_hash": new_hash}, end_access_tokens=True, end_refresh_tokens=True
        )
        self._states.forget(user.id)
        if changed is None:
            raise Unauthenticated("this session has ended; log in again")
        return await self._session(changed, now)

    async def forget_idle_attempts(self) -> int:
        """Drop throttle pairs idle for FORGET_AFTER (a loop calls this)."""
        return await self._attempts.forget_before(utcnow() - FORGET_AFTER)

    async def ensure_admin(self, email: str, password: str) -> None:
        """Create the configured first admin once (idempotent across restarts and instances)."""
        if not email or not password:
            return
        email = validation.normalize_email(email)
        username = email.split("@", 1)[0][:64] or "admin"
        if len(username) < 3:
            username = f"{username}-admin"
        created = await self._users.ensure_admin(email, username, await self._passwords.hash(password), utcnow())
        if created:
            log.info("created admin account %s", email)
