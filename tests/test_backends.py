"""Serving backends without a server: what AUTO and the settings resolve to, and the export cache's
bookkeeping (status file, removal of what no stored version owns). End to end: test_e2e_backends.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewshot import backend_cache
from fewshot.backend_cache import ServingBackend
from fewshot.serving.backends import CPU_DEFAULT, BackendChoice
from fewshot.settings import get_settings


@pytest.mark.parametrize(("backend", "quantize", "on_gpu", "expected"), [
    ("AUTO", "AUTO", False, CPU_DEFAULT),
    ("AUTO", "AUTO", True, ("torch", "none")),  # the exports run on CPU only
    ("TORCH", "INT8", False, ("torch", "none")),  # torch's precision is INFERENCE_DTYPE's
    ("ONNX", "INT8", True, ("onnx", "int8")),  # asked for explicitly: served so, on CPU
    ("OPENVINO", "NONE", False, ("openvino", "none")),
    # AUTO quantization: the measured default's for the default backend, float32 (exact) for another
    (CPU_DEFAULT[0].upper(), "AUTO", False, CPU_DEFAULT),
    ("ONNX" if CPU_DEFAULT[0] != "onnx" else "OPENVINO", "AUTO", False,
     ("onnx" if CPU_DEFAULT[0] != "onnx" else "openvino", "none")),
])
def test_settings_resolve_to_a_backend(backend: str, quantize: str, on_gpu: bool, expected: tuple[str, str]) -> None:
    choice = BackendChoice.resolve(backend, quantize, on_gpu)
    assert (choice.backend, choice.quantize) == expected
    assert choice.variant == "-".join(expected)


@pytest.fixture
def model_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MODEL_PATH", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_status_is_null_until_a_load_writes_it(model_path: Path) -> None:
    assert backend_cache.read_status("m", "v1") is None
    status = ServingBackend(requested="onnx-int8", backend="torch", quantize="none", error="ONNX export failed (x)")
    backend_cache.write_status("m", "v1", status)
    assert backend_cache.read_status("m", "v1") == status
    assert backend_cache.version_directory("m", "v1") == model_path / "backends" / "m" / "v1"


def test_exports_no_stored_version_owns_are_removed(model_path: Path) -> None:
    for name, version in [("kept", "v1"), ("kept", "gone"), ("deleted", "v1")]:
        (backend_cache.version_directory(name, version) / "onnx-int8").mkdir(parents=True)
    removed = backend_cache.remove_orphans({"kept": {"v1"}})
    assert sorted(removed) == ["deleted:v1", "kept:gone"]
    assert [p.name for p in (model_path / "backends").iterdir()] == ["kept"]
    assert [p.name for p in (model_path / "backends" / "kept").iterdir()] == ["v1"]
    backend_cache.remove("kept", "v1")
    assert not (model_path / "backends" / "kept").exists()


def test_exports_are_swept_only_beside_model_paths_own_store(monkeypatch: pytest.MonkeyPatch, model_path: Path) -> None:
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    get_settings.cache_clear()
    assert backend_cache.pairs_with_store()
    monkeypatch.setenv("BENTOML_HOME", str(model_path / "elsewhere"))  # a tool or test on another store
    get_settings.cache_clear()
    assert not backend_cache.pairs_with_store()
