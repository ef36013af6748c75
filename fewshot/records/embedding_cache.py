"""A version's embeddings of the texts it was trained and evaluated on, kept for its next retrain.

A `head` retrain keeps the served version's body and fits a new head on the whole example set:
embedding the texts is almost all of its time (MiniLM, 2 CPU cores: ~3 ms per text), and all but
the new ones were embedded by that very body when the version was made. They are kept beside the
version's serving exports (MODEL_PATH/backends/<name>/<version>/embeddings.npz: files derived from
a version, removed with it), as numpy arrays read without pickle: the vectors, and the texts as one
UTF-8 byte buffer with the offset of each (see `write`).
"""

from __future__ import annotations

import itertools
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
            return dict(zip(_texts(stored), stored["vectors"], strict=True))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError) as error:  # UnicodeDecodeError is a ValueError
        logger.warning("%s:%s: its cached embeddings could not be read (%s); they are computed again", name,
                       version, error)
        return {}


def _texts(stored: np.lib.npyio.NpzFile) -> list[str]:
    """The texts in the order of the vectors' rows, from either layout (ValueError when a file's arrays disagree)."""
    if "texts" in stored:  # written before the byte buffer: fixed-width unicode, one row per text
        return stored["texts"].tolist()
    buffer, offsets = stored["text_bytes"], stored["text_offsets"]
    if buffer.dtype != np.uint8 or offsets.dtype != np.int64 or buffer.ndim != 1 or offsets.ndim != 1 \
            or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(buffer) or np.any(np.diff(offsets) < 0):
        raise ValueError("its text offsets do not match its text bytes")
    raw = buffer.tobytes()
    return [raw[start:end].decode(errors="surrogatepass") for start, end in itertools.pairwise(offsets.tolist())]


def write(name: str, version: str, cache: EmbeddingCache) -> None:
    """Written beside and renamed into place: a reader never sees half a file.

    The texts are one UTF-8 buffer and the offsets where each starts (text i is
    bytes[offsets[i]:offsets[i + 1]]): a fixed-width unicode array makes every row 4 bytes × the longest
    text, so 1,000 short texts and one of 10,000 characters (384-dim vectors) took 41.6 MB, 1.5 MB of it
    vectors, and 30 ms to read; now 1.6 MB and 2.4 ms. Files in the old layout (key `texts`) still read."""
    if not cache:
        return
    texts = list(cache)
    # surrogatepass: JSON's "\ud800" escape is a lone surrogate in a str, which strict UTF-8 refuses
    encoded = [text.encode(errors="surrogatepass") for text in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(text) for text in encoded], out=offsets[1:])
    path = backend_cache.version_directory(name, version) / CACHE_FILE
    with backend_cache.replacing(path) as staged, staged.open("wb") as handle:
        # a file object: np.savez adds ".npz" to a file name that lacks it
        np.savez(handle, text_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8), text_offsets=offsets,
                 vectors=np.stack([cache[text] for text in texts]))
