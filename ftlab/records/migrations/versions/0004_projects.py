"""projects: files, jobs and API keys belong to a project; existing ones to `default`, existing keys are admin

Keys made before projects existed saw every object; they keep that as admin keys of the project `default`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-14 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PROJECT_TABLES = ("files", "fine_tuning_jobs")


def upgrade() -> None:
    for table in PROJECT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("project", sa.String(length=64), nullable=False, server_default="default"))
            batch_op.create_index(batch_op.f(f"ix_{table}_project"), ["project"], unique=False)
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("project", sa.String(length=64), nullable=False, server_default="default"))
        batch_op.add_column(sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(sa.text("UPDATE api_keys SET admin = :yes").bindparams(yes=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("admin")
        batch_op.drop_column("project")
    for table in PROJECT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_project"))
            batch_op.drop_column("project")
