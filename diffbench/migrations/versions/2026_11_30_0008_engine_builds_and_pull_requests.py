"""The engine build each result came from (and its environment's package hash), and a run's pull request.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('results') as batch:
        batch.add_column(sa.Column('engine_build', sa.Text(), nullable=True))
        batch.add_column(sa.Column('engine_packages', sa.String(16), nullable=True))
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('pull_request', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('pull_request')
    with op.batch_alter_table('results') as batch:
        batch.drop_column('engine_packages')
        batch.drop_column('engine_build')
