"""Alembic migrations of the ftlab database (applied by `ftlab.records.db.init_db`)."""
