"""A version's cached embeddings (fewshot/records/embedding_cache.py) on a real file: its size follows the
texts' total length, not the longest text's; every text comes back exactly; files in the layout
written before (a fixed-width unicode array, key `texts`) still read; a damaged file reads as empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fewshot import backend_cache
from fewshot.records import embedding_cache
from fewshot.settings import get_settings

DIMENSIONS = 384  # all-MiniLM-L6-v2's


@pytest.fixture
def model_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("MODEL_PATH", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def vectors(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIMENSIONS)).astype(np.float32)


def cache_file(name: str, version: str) -> Path:
    return backend_cache.version_directory(name, version) / embedding_cache.CACHE_FILE


def assert_same(read: embedding_cache.EmbeddingCache, written: embedding_cache.EmbeddingCache) -> None:
    assert list(read) == list(written)
    for text, vector in written.items():
        assert read[text].dtype == vector.dtype and np.array_equal(read[text], vector), repr(text)


def test_one_long_text_does_not_widen_every_row(model_path: Path) -> None:
    texts = [f"short text number {n}" for n in range(1000)] + ["x" * 10_000]
    cache = dict(zip(texts, vectors(len(texts)), strict=True))
    embedding_cache.write("m", "v1", cache)
    vector_bytes = len(texts) * DIMENSIONS * 4
    text_bytes = sum(len(text.encode()) for text in texts)
    # the vectors, the texts' UTF-8 and 8 bytes of offset per text, plus 16 KiB for the zip and .npy headers;
    # the fixed-width layout took 41,578,046 bytes here (1,001 rows × 10,000 characters × 4 bytes)
    assert cache_file("m", "v1").stat().st_size < vector_bytes + text_bytes + 8 * (len(texts) + 1) + 16_384
    assert_same(embedding_cache.read("m", "v1"), cache)


def test_every_text_comes_back_exactly(model_path: Path) -> None:
    texts = ["", " ", "a", "line one\nline two\r\n", "tab\there", "trailing spaces  ", "naïve café", "日本語のテキスト",
             "emoji 🙂👍🏽", "zero\x00inside", "ends with a nul\x00", "\u200bzero width", "lone \ud800 surrogate",
             "x" * 10_000, "Ω" * 3]
    cache = dict(zip(texts, vectors(len(texts), seed=1), strict=True))
    embedding_cache.write("m", "v1", cache)
    assert_same(embedding_cache.read("m", "v1"), cache)
    one = {"only": vectors(1, seed=2)[0]}
    embedding_cache.write("m", "v1", one)  # replaced whole
    assert_same(embedding_cache.read("m", "v1"), one)
    embedding_cache.write("m", "v2", {})  # nothing to keep: no file
    assert not cache_file("m", "v2").exists() and embedding_cache.read("m", "v2") == {}


def test_a_file_in_the_old_layout_still_reads(model_path: Path) -> None:
    texts = ["My card has not arrived yet", "Où est ma carte ?", "two\nlines"]
    cache = dict(zip(texts, vectors(len(texts), seed=3), strict=True))
    path = cache_file("m", "old")
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:  # exactly what write() did before the byte buffer
        np.savez(handle, texts=np.array(texts, dtype=str), vectors=np.stack([cache[text] for text in texts]))
    assert_same(embedding_cache.read("m", "old"), cache)


def test_a_damaged_or_unsafe_file_reads_as_empty(model_path: Path) -> None:
    path = cache_file("m", "bad")
    path.parent.mkdir(parents=True)

    def saved(**arrays: np.ndarray) -> dict[str, np.ndarray]:
        with path.open("wb") as handle:
            np.savez(handle, **arrays)
        return embedding_cache.read("m", "bad")

    two = vectors(2)
    good = {"text_bytes": np.frombuffer(b"abcd", dtype=np.uint8), "text_offsets": np.array([0, 2, 4]), "vectors": two}
    assert list(saved(**good)) == ["ab", "cd"]
    assert saved(**{**good, "text_offsets": np.array([0, 3, 2])}) == {}  # offsets going backwards
    assert saved(**{**good, "text_offsets": np.array([0, 2, 5])}) == {}  # past the buffer's end
    assert saved(**{**good, "text_offsets": np.array([0.0, 2.0, 4.0])}) == {}  # not integers
    assert saved(**{**good, "text_offsets": np.array([0, 1, 2, 4])}) == {}  # three texts, two vectors
    assert saved(**{**good, "text_bytes": np.frombuffer(b"a\xffcd", dtype=np.uint8)}) == {}  # not UTF-8
    assert saved(texts=np.array([{"a": 1}], dtype=object), vectors=two[:1]) == {}  # a pickle: never loaded
    path.write_bytes(b"not a zip file")
    assert embedding_cache.read("m", "bad") == {}
