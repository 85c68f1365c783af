"""ops.actions moves into the audit trail auth.audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 04:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # auth is migrated before ops (caravan.system.prepare), so auth.audit exists.
    op.execute(
        "INSERT INTO auth.audit (at, actor, action, target, detail)"
        " SELECT at, actor, action, coalesce(detail->>'topic', 'dead letters'),"
        " detail || jsonb_build_object('dry_run', dry_run) FROM ops.actions ORDER BY id"
    )
    op.drop_table("actions", schema="ops")


def downgrade() -> None:
    op.execute(
        "CREATE TABLE ops.actions (id bigserial PRIMARY KEY,"
        " at timestamptz NOT NULL DEFAULT now(), actor varchar(128) NOT NULL,"
        " action varchar(32) NOT NULL, dry_run boolean NOT NULL, detail jsonb NOT NULL)"
    )
    op.execute(
        "INSERT INTO ops.actions (at, actor, action, dry_run, detail)"
        " SELECT at, actor, action, coalesce((detail->>'dry_run')::boolean, false), detail"
        " FROM auth.audit WHERE action IN ('replay', 'redrive') ORDER BY id"
    )
