"""Initial schema: users, refresh tokens, jobs, schedule state, runs, output.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import LongText, UtcDateTime
from db.partitions import initial_partition_clause

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False, index=True),
        sa.Column("family_id", sa.String(36), nullable=False, index=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_refresh_tokens_token_hash"),
    )
    op.create_table(
        "job_definition",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("job_type", sa.String(16), nullable=False),
        sa.Column("cron_expr", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("scheduled_at", UtcDateTime(), nullable=True),
        sa.Column("script_content", LongText, nullable=False),
        sa.Column("timeout_seconds", sa.Integer, nullable=False),
        sa.Column("retry_max_attempts", sa.Integer, nullable=False),
        sa.Column("retry_strategy", sa.String(32), nullable=False),
        sa.Column("retry_initial_delay_seconds", sa.Integer, nullable=False),
        sa.Column("retry_max_delay_seconds", sa.Integer, nullable=False),
        sa.Column("retry_multiplier", sa.Float, nullable=False),
        sa.Column("misfire_policy", sa.String(16), nullable=False),
        sa.Column("overlap_policy", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("max_lateness_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("owner_id", "request_id", name="uq_job_definition_owner_id_request_id"),
    )
    op.create_index("ix_job_definition_owner_state_created", "job_definition", ["owner_id", "state", "created_at"])
    op.create_index("ix_job_definition_state_created", "job_definition", ["state", "created_at"])
    op.create_table(
        "job_schedule_state",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("next_fire_at", UtcDateTime(), nullable=False),
        sa.Column("last_fire_at", UtcDateTime(), nullable=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_index("ix_job_schedule_state_next_fire_at", "job_schedule_state", ["next_fire_at"])
    op.create_table(
        "job_run",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("scheduled_at", UtcDateTime(), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("fencing_token", sa.String(32), nullable=False, server_default=""),
        sa.Column("queued_at", UtcDateTime(), nullable=True),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("error", sa.String(1000), nullable=False, server_default=""),
        sa.Column("skip_reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", "scheduled_at"),
        sa.UniqueConstraint("job_id", "scheduled_at", "attempt", name="uq_job_run_job_id_scheduled_at_attempt"),
    )
    for name, cols in (
        ("ix_job_run_id", ["id"]),
        ("ix_job_run_status_due", ["status", "due_at"]),
        ("ix_job_run_status_worker", ["status", "worker_id"]),
        ("ix_job_run_status_queued", ["status", "queued_at"]),
        ("ix_job_run_job_status", ["job_id", "status"]),
        ("ix_job_run_finished", ["finished_at"]),
    ):
        op.create_index(name, "job_run", cols)
    bind = op.get_bind()
    if bind.dialect.name == "mysql":
        op.execute(f"ALTER TABLE job_run {initial_partition_clause()}")
    op.create_table(
        "run_output",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("scheduled_at", UtcDateTime(), nullable=False, index=True),
        sa.Column("stdout", LongText, nullable=False),
        sa.Column("stderr", LongText, nullable=False),
        sa.Column("stdout_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("stderr_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    for table in ("run_output", "job_run", "job_schedule_state", "job_definition", "refresh_tokens", "users"):
        op.drop_table(table)
