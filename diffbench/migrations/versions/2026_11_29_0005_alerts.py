"""Alerts already announced, so that each goes out once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'alerts',
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('case_id', sa.String(length=200), nullable=False),
        sa.Column('framework', sa.String(length=64), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('announced_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_alerts')),
    )


def downgrade() -> None:
    op.drop_table('alerts')
