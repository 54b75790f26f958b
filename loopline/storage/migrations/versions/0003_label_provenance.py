"""Label provenance: who sent each label and when, and conflicts kept instead of
overwritten.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as table:
        table.add_column(sa.Column("source", sa.String(128), nullable=False, server_default=""))
        table.add_column(sa.Column("latest", sa.String(256), nullable=False, server_default=""))
        table.add_column(sa.Column("conflicts", sa.Integer, nullable=False, server_default="0"))
    op.execute("UPDATE feedback SET latest = label")
    op.create_table(
        "label_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("item", sa.Integer, nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
    )
    op.create_index("label_events_source", "label_events", ["source", "id"])


def downgrade() -> None:
    op.drop_index("label_events_source", table_name="label_events")
    op.drop_table("label_events")
    with op.batch_alter_table("feedback") as table:
        table.drop_column("conflicts")
        table.drop_column("latest")
        table.drop_column("source")
