"""Accounts and refresh tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.auth import Role
from core.domain import User
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
        failed_logins=row.failed_logins,
        locked_until=row.locked_until,
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
                        failed_logins=0,
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

    async def set_role(self, user_id: str, role: Role) -> User | None:
        async with self._db.transaction() as conn:
            await conn.execute(update(UserRow).where(UserRow.id == user_id).values(role=role.value))
            row = (await conn.execute(select(UserRow).where(UserRow.id == user_id))).first()
        return _user(row) if row else None

    async def record_failure(self, user_id: str, failed_logins: int, locked_until: datetime | None) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                update(UserRow)
                .where(UserRow.id == user_id)
                .values(failed_logins=failed_logins, locked_until=locked_until)
            )

    async def record_success(self, user_id: str, new_hash: str | None) -> None:
        values: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
        if new_hash:
            values["password_hash"] = new_hash
        async with self._db.transaction() as conn:
            await conn.execute(update(UserRow).where(UserRow.id == user_id).values(**values))

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
        self, user_id: str, family_id: str, token_hash: str, now: datetime, expires_at: datetime
    ) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                insert(RefreshTokenRow).values(
                    id=new_id(),
                    user_id=user_id,
                    family_id=family_id,
                    token_hash=token_hash,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    async def spend_refresh(self, token_hash: str, now: datetime) -> tuple[str, str] | None:
        """Mark the token used; returns (user_id, family_id) if it was live.

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
        return row.user_id, row.family_id
