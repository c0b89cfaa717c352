"""GPU telemetry, per-step time, cost units, throughput, output determinism, memory release and the hardware canary.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESULT_COLUMNS = (
    ('step_median_ms', sa.Double()),
    ('ms_per_megapixel_step', sa.Double()),
    ('seconds_per_video_second', sa.Double()),
    ('joules_per_output', sa.Double()),
    ('telemetry', sa.JSON()),
    ('identical_outputs', sa.Boolean()),
    ('output_spread', sa.Double()),
    ('memory_release_s', sa.Double()),
    ('suspect', sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table('results') as batch:
        for name, type_ in RESULT_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.add_column(sa.Column('throughput', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('samples') as batch:
        batch.add_column(sa.Column('thumbnail', sa.String(length=512), nullable=True))
        batch.add_column(sa.Column('throttled', sa.Boolean(), nullable=True))
    op.create_table(
        'canaries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=False),
        sa.Column('host', sa.String(length=200), nullable=False),
        sa.Column('gpu', sa.Integer(), nullable=False),
        sa.Column('device_name', sa.String(length=200), nullable=False),
        sa.Column('matmul_tflops', sa.Double(), nullable=False),
        sa.Column('bandwidth_gbs', sa.Double(), nullable=False),
        sa.Column('seconds', sa.Double(), nullable=False),
        sa.Column('measured_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('suspect', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name='fk_canaries_run_id_runs', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name='pk_canaries'),
    )
    op.create_index('ix_canaries_run_id', 'canaries', ['run_id'])
    op.create_index('ix_canaries_host_gpu', 'canaries', ['host', 'gpu'])


def downgrade() -> None:
    op.drop_index('ix_canaries_host_gpu', table_name='canaries')
    op.drop_index('ix_canaries_run_id', table_name='canaries')
    op.drop_table('canaries')
    with op.batch_alter_table('samples') as batch:
        batch.drop_column('throttled')
        batch.drop_column('thumbnail')
    with op.batch_alter_table('results') as batch:
        batch.drop_column('throughput')
        for name, _ in reversed(RESULT_COLUMNS):
            batch.drop_column(name)
