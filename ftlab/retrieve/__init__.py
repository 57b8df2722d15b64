"""Retrieval: passages from documents (chunked along their headings) or from a training set, embedded once and
searched by meaning. `passages.py` makes the passages, `index.py` indexes them (FAISS files under FTLAB_HOME, or
pgvector when the records live in PostgreSQL: `pgvector.py`), reusing an index whose content hash is known."""
