"""The component catalog: published component versions, and the pipelines that pin them.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_components",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("major", sa.Integer, nullable=False),
        sa.Column("minor", sa.Integer, nullable=False),
        sa.Column("patch", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("component_yaml", sa.Text, nullable=False),
        sa.Column("interface", sa.Text, nullable=False),
        sa.Column("changelog", sa.Text, nullable=False),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("published", sa.Float, nullable=False),
        sa.Column("deprecated", sa.Text),
        sa.PrimaryKeyConstraint("name", "version", name="catalog_components_pk"),
    )
    op.create_table(
        "catalog_uses",
        sa.Column("pipeline", sa.String(512), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("pipeline", "name", name="catalog_uses_pk"),
    )


def downgrade() -> None:
    op.drop_table("catalog_uses")
    op.drop_table("catalog_components")
