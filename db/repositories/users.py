"""Accounts and refresh tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.auth import AccountState, Role
from core.domain import User, utcnow
from core.errors import AlreadyExists
from core.ids import new_id
from db.engine import Database
from db.models import RefreshTokenRow, UserRow


def _user(row: Any) -> User:
    return User(
        id=row.id,
        username=row.username,
        email=row.email,
        role=Role(row.role),
        password_hash=row.password_hash,
        create_time=row.created_at,
        token_version=row.token_version,
        disabled=bool(row.disabled),
    )


class UserRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, username: str, email: str, password_hash: str, role: Role, now: datetime) -> User:
        async with self._db.transaction() as conn:
            taken = (
                await conn.execute(
                    select(UserRow.email, UserRow.username).where(
                        (UserRow.email == email) | (UserRow.username == username)
                    )
                )
            ).first()
            if taken is not None:
                field = "email" if taken.email == email else "username"
                raise AlreadyExists(f"{field} is already registered", reason=f"{field.upper()}_TAKEN")
            user_id = new_id()
            try:
                await conn.execute(
                    insert(UserRow).values(
                        id=user_id,
                        username=username,
                        email=email,
                        password_hash=password_hash,
                        role=role.value,
                        created_at=now,
                        token_version=0,
                        disabled=False,
                    )
                )
            except IntegrityError as exc:
                raise AlreadyExists("email or username is already registered") from exc
        return User(user_id, username, email, role, password_hash, now)

    async def by_email(self, email: str) -> User | None:
        async with self._db.transaction() as conn:
            row = (await conn.execute(select(UserRow).where(UserRow.email == email))).first()
        return _user(row) if row else None

    async def by_id(self, user_id: str) -> User | None:
        async with self._db.transaction() as conn:
            row = (await conn.execute(select(UserRow).where(UserRow.id == user_id))).first()
        return _user(row) if row else None

    async def list(self, limit: int, offset: int) -> tuple[list[User], int]:
        async with self._db.transaction() as conn:
            rows = (
                await conn.execute(select(UserRow).order_by(UserRow.created_at, UserRow.id).limit(limit).offset(offset))
            ).all()
            total = (await conn.execute(select(func.count()).select_from(UserRow))).scalar_one()
        return [_user(r) for r in rows], int(total)

    async def account_state(self, user_id: str) -> AccountState | None:
        """What authenticating a call needs: role, token version, disabled flag."""
        async with self._db.transaction() as conn:
            row = (
                await conn.execute(
                    select(UserRow.role, UserRow.token_version, UserRow.disabled).where(UserRow.id == user_id)
                )
            ).first()
        return AccountState(Role(row.role), row.token_version, bool(row.disabled)) if row else None

    async def set_role(self, user_id: str, role: Role, now: datetime | None = None) -> User | None:
        return await self.change(user_id, now or utcnow(), {"role": role.value}, end_refresh_tokens=True)

    async def change(
        self,
        user_id: str,
        now: datetime,
        values: dict[str, Any],
        *,
        end_access_tokens: bool = False,
        end_refresh_tokens: bool = False,
    ) -> User | None:
        """Update the account's columns in ``values``; ``end_access_tokens`` moves its
        token version on, ``end_refresh_tokens`` revokes its live refresh tokens.
        One transaction; returns the account as changed, None if there is none."""
        values = dict(values)
        if end_access_tokens:
            values["token_version"] = UserRow.token_version + 1
        async with self._db.transaction() as conn:
            await conn.execute(update(UserRow).where(UserRow.id == user_id).values(**values))
            row = (await conn.execute(select(UserRow).where(UserRow.id == user_id))).first()
            if row is None:
                return None
            if end_refresh_tokens:
                await conn.execute(
                    update(RefreshTokenRow)
                    .where(RefreshTokenRow.user_id == user_id, RefreshTokenRow.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
        return _user(row)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Store a re-hash of the same password (newer argon2 parameters)."""
        async with self._db.transaction() as conn:
            await conn.execute(update(UserRow).where(UserRow.id == user_id).values(password_hash=password_hash))

    async def ensure_admin(self, email: str, username: str, password_hash: str, now: datetime) -> bool:
        """Create the admin if no account has this email; returns whether it was created."""
        if await self.by_email(email) is not None:
            return False
        try:
            await self.create(username, email, password_hash, Role.ADMIN, now)
        except AlreadyExists:
            return False
        return True

    # Refresh tokens -------------------------------------------------------

    async def store_refresh(
        self,
        user_id: str,
        family_id: str,
        token_hash: str,
        now: datetime,
        expires_at: datetime,
        token_version: int = 0,
    ) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                insert(RefreshTokenRow).values(
                    id=new_id(),
                    user_id=user_id,
                    family_id=family_id,
                    token_hash=token_hash,
                    token_version=token_version,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    async def spend_refresh(self, token_hash: str, now: datetime) -> tuple[str, str, int] | None:
        """Mark the token used; returns (user_id, family_id, token_version) if it was live.

        A token presented twice means it leaked: the whole family is revoked and
        None is returned.
        """
        async with self._db.transaction() as conn:
            row = (await conn.execute(select(RefreshTokenRow).where(RefreshTokenRow.token_hash == token_hash))).first()
            if row is None:
                return None
            if row.used_at is not None or row.revoked_at is not None:
                await conn.execute(
                    update(RefreshTokenRow)
                    .where(RefreshTokenRow.family_id == row.family_id, RefreshTokenRow.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                return None
            if row.expires_at <= now:
                return None
            spent = await conn.execute(
                update(RefreshTokenRow)
                .where(RefreshTokenRow.id == row.id, RefreshTokenRow.used_at.is_(None))
                .values(used_at=now)
            )
            if spent.rowcount != 1:
                return None
        return row.user_id, row.family_id, row.token_version
