"""A version's embeddings of the texts it was trained and evaluated on, kept for its next retrain.

A `head` retrain keeps the served version's body and fits a new head on the whole example set:
embedding the texts is almost all of its time (MiniLM, 2 CPU cores: ~3 ms per text), and all but
the new ones were embedded by that very body when the version was made. They are kept beside the
version's serving exports (MODEL_PATH/backends/<name>/<version>/embeddings.npz: files derived from
a version, removed with it), as numpy arrays read without pickle.
"""

from __future__ import annotations

import logging

import numpy as np

from fewshot import backend_cache

logger = logging.getLogger("fewshot.trainer")

CACHE_FILE = "embeddings.npz"

EmbeddingCache = dict[str, np.ndarray]
"""Texts → their embeddings by one body. No torch here: the gateway reads a version's to audit its
example set (GET /v1/models/{name}/suspects)."""


def read(name: str, version: str) -> EmbeddingCache:
    """The version's cached embeddings by text; empty when it kept none (an import, one made before the
    cache) or the file cannot be read. A multi-label fine-tuned version kept its evaluation texts' only."""
    path = backend_cache.version_directory(name, version) / CACHE_FILE
    try:
        with np.load(path, allow_pickle=False) as stored:
            return dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError) as error:
        logger.warning("%s:%s: its cached embeddings could not be read (%s); they are computed again", name,
                       version, error)
        return {}


def write(name: str, version: str, cache: EmbeddingCache) -> None:
    """Written beside and renamed into place: a reader never sees half a file."""
    if not cache:
        return
    texts = list(cache)
    path = backend_cache.version_directory(name, version) / CACHE_FILE
    with backend_cache.replacing(path) as staged, staged.open("wb") as handle:
        # a file object: np.savez adds ".npz" to a file name that lacks it
        np.savez(handle, texts=np.array(texts, dtype=str), vectors=np.stack([cache[text] for text in texts]))
