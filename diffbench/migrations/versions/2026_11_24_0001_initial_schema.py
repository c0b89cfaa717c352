"""Initial schema: runs, results, samples, stage timings.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('runs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('import_key', sa.String(length=64), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('baseline', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('gpu_model', sa.String(length=200), nullable=False),
    sa.Column('driver', sa.String(length=64), nullable=False),
    sa.Column('diffbench_version', sa.String(length=32), nullable=False),
    sa.Column('engine_versions', sa.JSON(), nullable=False),
    sa.Column('config_path', sa.Text(), nullable=True),
    sa.Column('config_sha256', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('flow_run_id', name=op.f('uq_runs_flow_run_id')),
    sa.UniqueConstraint('import_key', name=op.f('uq_runs_import_key'))
    )
    op.create_table('results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('case_id', sa.String(length=200), nullable=False),
    sa.Column('framework', sa.String(length=64), nullable=False),
    sa.Column('engine', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_class', sa.String(length=32), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('log_tail', sa.Text(), nullable=True),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('model_revision', sa.String(length=64), nullable=True),
    sa.Column('image_digest', sa.String(length=200), nullable=True),
    sa.Column('engine_version', sa.String(length=200), nullable=True),
    sa.Column('config_hash', sa.String(length=16), nullable=False),
    sa.Column('series_key', sa.String(length=16), nullable=False),
    sa.Column('methodology', sa.String(length=64), nullable=False),
    sa.Column('hardware', sa.String(length=200), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=True),
    sa.Column('num_gpus', sa.Integer(), nullable=False),
    sa.Column('gpu_ids', sa.JSON(), nullable=False),
    sa.Column('serve_argv', sa.JSON(), nullable=False),
    sa.Column('download_s', sa.Double(), nullable=True),
    sa.Column('ready_s', sa.Double(), nullable=True),
    sa.Column('first_request_latency_s', sa.Double(), nullable=True),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('median_s', sa.Double(), nullable=True),
    sa.Column('min_s', sa.Double(), nullable=True),
    sa.Column('max_s', sa.Double(), nullable=True),
    sa.Column('server_median_s', sa.Double(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('median_s >= 0 AND min_s >= 0 AND max_s >= 0', name=op.f('ck_results_latency_not_negative')),
    sa.CheckConstraint('n >= 0', name=op.f('ck_results_n_not_negative')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_results_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_results')),
    sa.UniqueConstraint('run_id', 'case_id', 'framework', name='uq_results_run_case_framework')
    )
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.create_index('ix_results_case_framework', ['case_id', 'framework'], unique=False)
        batch_op.create_index(batch_op.f('ix_results_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_results_series_key'), ['series_key'], unique=False)

    op.create_table('samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('result_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('client_latency_s', sa.Double(), nullable=False),
    sa.Column('server_latency_s', sa.Double(), nullable=True),
    sa.Column('server_latency_source', sa.String(length=16), nullable=False),
    sa.Column('peak_memory_mb', sa.Double(), nullable=True),
    sa.Column('output_sha256', sa.String(length=64), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('num_frames', sa.Integer(), nullable=True),
    sa.Column('poll_bound_s', sa.Double(), nullable=True),
    sa.Column('perf_dump_missing', sa.Boolean(), nullable=False),
    sa.Column('denoise_step_ms', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['result_id'], ['results.id'], name=op.f('fk_samples_result_id_results'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples')),
    sa.UniqueConstraint('result_id', 'index', name='uq_samples_result_index')
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_samples_result_id'), ['result_id'], unique=False)

    op.create_table('stage_timings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=100), nullable=False),
    sa.Column('duration_ms', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_stage_timings_sample_id_samples'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stage_timings')),
    sa.UniqueConstraint('sample_id', 'stage', name='uq_stage_timings_sample_stage')
    )
    with op.batch_alter_table('stage_timings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stage_timings_sample_id'), ['sample_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('stage_timings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stage_timings_sample_id'))

    op.drop_table('stage_timings')
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_samples_result_id'))

    op.drop_table('samples')
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_results_series_key'))
        batch_op.drop_index(batch_op.f('ix_results_run_id'))
        batch_op.drop_index('ix_results_case_framework')

    op.drop_table('results')
    op.drop_table('runs')
