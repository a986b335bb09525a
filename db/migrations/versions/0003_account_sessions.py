"""Accounts: session versions, disabled accounts, login throttling per client.

users.token_version moves on when an account's sessions end (access and refresh
tokens carry it); users.disabled; login_throttle counts attempts per (account, client address) and
replaces the per-account lock (users.failed_logins, users.locked_until). Existing
accounts start at version 0, enabled, with no attempt counted.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot drop columns in place on every version (it copies the table there).
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_version", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.drop_column("failed_logins")
        batch.drop_column("locked_until")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("token_version", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "login_throttle",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("client", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("checked_at", UtcDateTime(), nullable=True),
        sa.Column("seen_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_login_throttle_seen_at", "login_throttle", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_login_throttle_seen_at", table_name="login_throttle")
    op.drop_table("login_throttle")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("token_version")
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("locked_until", UtcDateTime(), nullable=True))
        batch.drop_column("disabled")
        batch.drop_column("token_version")
