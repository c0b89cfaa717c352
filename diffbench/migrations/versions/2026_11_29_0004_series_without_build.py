"""A series no longer changes with the engine's build: existing keys are recomputed without the image digest.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESULTS = sa.table('results', sa.column('id', sa.Integer), sa.column('config_hash', sa.String),
                   sa.column('engine', sa.String), sa.column('hardware', sa.String),
                   sa.column('methodology', sa.String), sa.column('image_digest', sa.String),
                   sa.column('series_key', sa.String))


def _key(controls: list[str]) -> str:
    # Spelled out, not imported: a migration must keep computing what it computed when it was written.
    return hashlib.sha256(json.dumps(controls).encode()).hexdigest()[:16]


def _recompute(with_digest: bool) -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(RESULTS.c.id, RESULTS.c.config_hash, RESULTS.c.engine, RESULTS.c.hardware,
                                        RESULTS.c.methodology, RESULTS.c.image_digest)).all()
    for row in rows:
        controls = [row.config_hash, row.engine, row.hardware, row.methodology]
        if with_digest and row.image_digest:
            controls.append(row.image_digest)
        connection.execute(sa.update(RESULTS).where(RESULTS.c.id == row.id).values(series_key=_key(controls)))


def upgrade() -> None:
    _recompute(with_digest=False)


def downgrade() -> None:
    _recompute(with_digest=True)
