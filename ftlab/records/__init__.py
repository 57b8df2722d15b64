"""Records: the SQLAlchemy database every part of ftlab writes to (files, runs, jobs, events, keys)."""

from ftlab.records.db import database_url, get_engine, init_db, new_session, session_scope

__all__ = ["database_url", "get_engine", "init_db", "new_session", "session_scope"]
