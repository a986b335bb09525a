"""Job network: which network a job's script can reach (NONE or HOST).

Existing jobs get NONE, the default: only the script's own loopback.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "job_definition",
        sa.Column("network", sa.String(16), nullable=False, server_default="NONE"),
    )


def downgrade() -> None:
    # SQLite cannot drop a column in place on every version: batch mode copies the table there.
    with op.batch_alter_table("job_definition") as batch:
        batch.drop_column("network")
