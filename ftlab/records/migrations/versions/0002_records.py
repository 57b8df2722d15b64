"""records: datasets, evaluations and their per-model results

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 16:41:58.894853
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at", sa.BigInteger(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("token_stats", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_table(
        "evaluations",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("test_file", sa.Text(), nullable=False),
        sa.Column("test_sha256", sa.String(length=64), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("headline", sa.String(length=32), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("comparisons", sa.JSON(), nullable=False),
        sa.Column("judgements", sa.JSON(), nullable=False),
        sa.Column("human_agreement", sa.JSON(), nullable=True),
        sa.Column("output_path", sa.Text(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evaluations_test_sha256"), ["test_sha256"], unique=False)

    op.create_table(
        "evaluation_models",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("evaluation_pk", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("load_seconds", sa.Float(), nullable=False),
        sa.Column("examples", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["evaluation_pk"], ["evaluations.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.pk"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("evaluation_models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evaluation_models_evaluation_pk"), ["evaluation_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_evaluation_models_run_pk"), ["run_pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("evaluation_models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluation_models_run_pk"))
        batch_op.drop_index(batch_op.f("ix_evaluation_models_evaluation_pk"))

    op.drop_table("evaluation_models")
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluations_test_sha256"))

    op.drop_table("evaluations")
    op.drop_table("datasets")
