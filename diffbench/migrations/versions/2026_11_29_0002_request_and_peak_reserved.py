"""Each result stores the request it sent; a sample's peak memory is named for what it is: reserved.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request', sa.JSON(), nullable=True))
    # Before 0002 the column mixed allocated (sglang perf dumps) and reserved (vllm-omni) peaks;
    # old values keep their number under the new name.
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.alter_column('peak_memory_mb', new_column_name='peak_reserved_mb')


def downgrade() -> None:
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.alter_column('peak_reserved_mb', new_column_name='peak_memory_mb')
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_column('request')
