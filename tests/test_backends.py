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


def test_a_lone_text_is_not_padded_to_eight_rows() -> None:
    """OpenVINO int8's passes are padded to few shapes; one text stays one row (fewshot/serving/backends.py)."""
    from fewshot.serving.backends import padded_rows

    assert [padded_rows(n, 8) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17, 64)] == [1, 2, 4, 4, 8, 8, 16, 16, 24, 64]


def test_auto_keeps_the_fastest_eligible_candidate_by_both_throughputs() -> None:
    from fewshot.backend_cache import CandidateTiming

    fast_alone = CandidateTiming(one_text_ms=1.0, full_pass_texts_per_s=400, eligible=True)  # 1000/s alone
    fast_in_bulk = CandidateTiming(one_text_ms=2.0, full_pass_texts_per_s=1000, eligible=True)  # 500/s alone
    assert fast_in_bulk.score > fast_alone.score  # sqrt(500 × 1000) > sqrt(1000 × 400)
    assert CandidateTiming(error="ONNX export failed").score == 0


def test_auto_checks_the_numpy_path_of_the_chosen_candidate_only_and_chooses_again_if_it_fails(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Candidates are timed through their numpy path unchecked; only the one chosen is checked (the check was
    most of AUTO's time on the default model). One that fails it is timed again as it would then serve,
    through sentence-transformers, and the choice is made again."""
    import numpy as np

    from fewshot.serving import auto_backend
    from fewshot.store import StoredModel

    speeds = {"torch-none": (50.0, 100.0), "onnx-none": (5.0, 500.0), "onnx-int8": (2.0, 900.0),
              "openvino-none": (6.0, 450.0), "onnx-int8 through sentence-transformers": (9.0, 300.0)}
    monkeypatch.setattr(auto_backend, "time_candidate", lambda predict, texts: (*predict(texts), np.zeros(len(texts))))

    def load(choice: BackendChoice):
        pipeline = "sentence-transformers" if choice.backend == "torch" else "numpy"
        return (ServingBackend(requested=choice.variant, backend=choice.backend, quantize=choice.quantize,
                               pipeline=pipeline), lambda texts: speeds[choice.variant])

    asked = []

    def confirm(choice: BackendChoice):
        asked.append(choice.variant)
        if choice.variant != "onnx-int8":
            return None
        return (ServingBackend(requested=choice.variant, backend=choice.backend, quantize=choice.quantize,
                               pipeline_error="embedding cosine 0.9"),
                lambda texts: speeds["onnx-int8 through sentence-transformers"])

    decision = auto_backend.measure(StoredModel("m", "v1", tmp_path, {"labels": ["a"]}), load, 2, confirm=confirm)
    assert asked == ["onnx-int8", "onnx-none"]
    assert decision.chosen == "onnx-none"
    assert decision.candidates["onnx-int8"].pipeline == "sentence-transformers"
    assert "openvino-int8" not in decision.candidates  # no calibration texts


def test_auto_times_again_on_another_cpu_or_architecture_not_for_another_version(
        model_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fewshot.serving import auto_backend
    from fewshot.store import StoredModel

    def version(name: str, hidden_size: int) -> StoredModel:
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text(f'{{"hidden_size": {hidden_size}}}')
        return StoredModel("m", name, directory, {})

    v1, v2, wider = version("v1", 384), version("v2", 384), version("v3", 768)
    assert auto_backend.decision_key(v1, 2) == auto_backend.decision_key(v2, 2)  # same base model: timed once
    assert auto_backend.decision_key(v1, 2) != auto_backend.decision_key(wider, 2)
    assert auto_backend.decision_key(v1, 2) != auto_backend.decision_key(v1, 4)  # INFERENCE_THREADS changed
    here = auto_backend.decision_key(v1, 2)
    monkeypatch.setattr(auto_backend, "cpu_identity", lambda: "Another CPU|avx2|2")
    assert auto_backend.decision_key(v1, 2) != here  # the volume moved to another machine
    assert auto_backend.decision_file(v1, 2).parent == model_path / "backends" / "auto"
