"""Safe heads and the import job's checks, in-process on real SetFit models (no server).

The pickle tests plant a `model_head.pkl` whose unpickling would create a marker file: the marker
must never appear unless the operator allowed pickles.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skops.io
import torch
from setfit import SetFitModel
from setfit.modeling import SetFitHead
from sklearn.linear_model import LogisticRegression

from fewshot.base_models import resolve_base_model
from fewshot.model_archive import model_card
from fewshot.store import StoredModel
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT
from trainers.errors import TrainingFailed
from trainers.heads import (
    PICKLED_HEAD_FILE,
    SKOPS_HEAD_FILE,
    UnsafeHead,
    has_safe_head,
    load_safe_head,
    save_safe_head,
)
from trainers.importing import load_classifier, name_columns
from trainers.training import save_classifier

TEXTS = ["my card has not arrived", "where is my new card", "top up failed", "my top-up did not go through",
         "what is the exchange rate", "how much is a euro in dollars"]
LABEL_IDS = [0, 0, 1, 1, 2, 2]
NAMES = ["card_arrival", "top_up_failed", "exchange_rate"]


class _RunsCode:
    """Unpickling this creates the file at `path`: what a malicious model_head.pkl could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def base_location() -> str:
    return resolve_base_model(BASE_MODEL).location


def trained(base_location: str, labels: list[str] | None = NAMES, string_classes: bool = False) -> SetFitModel:
    model = SetFitModel.from_pretrained(base_location, labels=labels)
    model.fit(TEXTS, [NAMES[i] for i in LABEL_IDS] if string_classes else LABEL_IDS, num_epochs=1,
              show_progress_bar=False)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, base_location: str) -> Path:
    directory = tmp_path_factory.mktemp("saved") / "model"
    save_classifier(trained(base_location), directory)
    return directory


def copy_without(source: Path, destination: Path, *names: str) -> Path:
    shutil.copytree(source, destination, ignore=lambda _, found: [n for n in found if n in names])
    return destination


def test_a_saved_classifier_has_its_head_twice_and_the_safe_copy_is_the_same_head(saved: Path) -> None:
    assert (saved / PICKLED_HEAD_FILE).is_file() and (saved / SKOPS_HEAD_FILE).is_file() and has_safe_head(saved)
    assert skops.io.get_untrusted_types(file=saved / SKOPS_HEAD_FILE) == []
    original = SetFitModel.from_pretrained(str(saved))
    head = load_safe_head(saved)
    embeddings = original.encode(TEXTS)
    np.testing.assert_array_equal(head.predict_proba(embeddings), original.model_head.predict_proba(embeddings))


def test_a_differentiable_head_round_trips_through_safetensors(tmp_path: Path) -> None:
    head = SetFitHead(in_features=8, out_features=3, temperature=0.5, device="cpu")
    save_safe_head(head, tmp_path)
    back = load_safe_head(tmp_path)
    features = torch.randn(4, 8)
    assert isinstance(back, SetFitHead) and back.temperature == 0.5
    torch.testing.assert_close(back.predict_proba(features), head.predict_proba(features))


class _RunsCodeWhenBuilt:
    """Building this from a skops file creates the file at `path` (skops restores an object's state
    through its __setstate__): what a malicious model_head.skops could do if its types were trusted."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        Path(state["path"]).touch()


def test_a_skops_head_with_types_outside_scikit_learn_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    skops.io.dump({"head": LogisticRegression(), "extra": _RunsCodeWhenBuilt(str(marker))}, tmp_path / SKOPS_HEAD_FILE)
    with pytest.raises(UnsafeHead, match="_RunsCodeWhenBuilt"):
        load_safe_head(tmp_path)
    assert not marker.exists()
    # The control: trusted, the same file runs the planted code, so the check above can fail.
    skops.io.load(tmp_path / SKOPS_HEAD_FILE, trusted=skops.io.get_untrusted_types(file=tmp_path / SKOPS_HEAD_FILE))
    assert marker.exists()


def test_import_reads_the_safe_head_and_never_the_pickle_beside_it(saved: Path, tmp_path: Path) -> None:
    planted = copy_without(saved, tmp_path / "model")
    marker = tmp_path / "pickle-ran"
    (planted / PICKLED_HEAD_FILE).write_bytes(pickle.dumps(_RunsCode(str(marker))))
    model = load_classifier(planted, "planted", allow_pickle=False, trust_remote_code=False)
    assert not marker.exists()
    assert name_columns(model, None) == NAMES
    expected = SetFitModel.from_pretrained(str(saved)).predict_proba(TEXTS, as_numpy=True)
    np.testing.assert_allclose(model.predict_proba(TEXTS, as_numpy=True), expected, rtol=0, atol=1e-6)


def test_a_pickled_head_is_refused_unless_allowed_and_then_loaded(saved: Path, tmp_path: Path) -> None:
    planted = copy_without(saved, tmp_path / "planted", SKOPS_HEAD_FILE)
    marker = tmp_path / "pickle-ran"
    (planted / PICKLED_HEAD_FILE).write_bytes(pickle.dumps(_RunsCode(str(marker))))
    with pytest.raises(TrainingFailed, match="TRUST_PICKLED_HEADS=true"):
        load_classifier(planted, "planted", allow_pickle=False, trust_remote_code=False)
    assert not marker.exists()
    honest = copy_without(saved, tmp_path / "honest", SKOPS_HEAD_FILE)
    model = load_classifier(honest, "honest", allow_pickle=True, trust_remote_code=False)
    assert name_columns(model, None) == NAMES


def test_a_sentence_transformers_model_is_not_a_setfit_classifier(base_location: str) -> None:
    with pytest.raises(TrainingFailed, match="not a SetFit classifier: found a sentence-transformers model"):
        load_classifier(Path(base_location), "minilm", allow_pickle=True, trust_remote_code=False)


def test_label_names_come_from_the_model_the_request_or_the_head(base_location: str, tmp_path: Path) -> None:
    unnamed = trained(base_location, labels=None)
    with pytest.raises(TrainingFailed, match=r"no label names.*send `labels`: 3 names"):
        name_columns(unnamed, None)
    with pytest.raises(TrainingFailed, match="labels: the model's head has 3 classes, but 2 labels"):
        name_columns(unnamed, ["a", "b"])
    assert name_columns(unnamed, ["x", "y", "z"]) == ["x", "y", "z"] and unnamed.labels == ["x", "y", "z"]

    by_name = trained(base_location, labels=None, string_classes=True)
    columns = name_columns(by_name, None)
    assert columns == sorted(NAMES)  # scikit-learn orders string classes
    assert list(by_name.model_head.classes_) == [0, 1, 2]  # class i is columns[i] from now on
    probabilities = by_name.predict_proba(TEXTS, as_numpy=True)
    assert [columns[i] for i in probabilities.argmax(axis=1)] == list(by_name.predict(TEXTS))
    save_classifier(by_name, tmp_path / "by-name")
    assert json.loads((tmp_path / "by-name" / "config_setfit.json").read_text())["labels"] == columns


def test_a_multi_label_model_is_refused(base_location: str, tmp_path: Path) -> None:
    model = SetFitModel.from_pretrained(base_location, multi_target_strategy="one-vs-rest")
    model.fit(TEXTS, [[1, 0], [1, 1], [0, 1], [0, 1], [1, 0], [0, 0]], num_epochs=1, show_progress_bar=False)
    save_classifier(model, tmp_path / "multi")
    with pytest.raises(TrainingFailed, match="multi-label"):
        load_classifier(tmp_path / "multi", "multi", allow_pickle=False, trust_remote_code=False)


def test_the_model_card_says_how_the_version_was_made_and_scored(tmp_path: Path) -> None:
    metadata = {"base_model": BASE_MODEL, "strategy": "setfit", "num_examples": 32, "labels": NAMES,
                "training_duration_seconds": 12.5, "accuracy": 0.875, "eval_source": "holdout",
                "eval_num_examples": 8, "created_at": "2026-12-01T10:00:00+00:00", "num_iterations": 20,
                "label_metrics": {name: {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
                                  for name in NAMES},
                "confusion_matrix": {"labels": NAMES, "counts": [[1, 1, 0], [0, 2, 0], [0, 0, 2]],
                                     "none_of_these": False}}
    card = model_card(StoredModel("intents", "abc", tmp_path, metadata))
    names = " | ".join(f"`{name}`" for name in NAMES)
    assert (f"| true \\ answer | {names} |\n|---|---|---|---|\n| `{NAMES[0]}` | 1 | 1 | 0 |\n"
            f"| `{NAMES[1]}` | 0 | 2 | 0 |\n| `{NAMES[2]}` | 0 | 0 | 2 |") in card
    assert card.startswith("---\nlibrary_name: setfit\n") and f"base_model: {BASE_MODEL}" in card
    assert "# intents:abc" in card and "Accuracy **0.8750** on 8 examples: a stratified hold-out" in card
    assert "| `card_arrival` | 1.0000 | 0.5000 | 0.6667 | 2 |" in card and "| training examples | 32 |" in card
    assert "SetFit: contrastive fine-tuning" in card and "2026-12-01T10:00:00" in card and "fewshot " in card
    imported = model_card(StoredModel("copy", "def", tmp_path, {"strategy": "imported", "source": "org/model",
                                                                "revision": "0123abc", "labels": NAMES}))
    assert "imported from `org/model` at revision `0123abc`" in imported and "Not evaluated" in imported
    assert "base_model:" not in imported


OLD_VERSION = """
import json, joblib, numpy as np
from pathlib import Path
from sklearn.linear_model import LogisticRegression
from fewshot import store
from trainers.heads import add_safe_heads_to_old_versions, load_safe_head
head = LogisticRegression().fit(np.random.default_rng(0).random((12, 4)), [0, 1, 2] * 4)
old = store.register("old", lambda d: joblib.dump(head, d / "model_head.pkl"),
                     {"created_at": "2026-11-01T00:00:00+00:00", "labels": ["a", "b", "c"]})
added, again = add_safe_heads_to_old_versions(), add_safe_heads_to_old_versions()
safe = load_safe_head(old.path)
same = np.array_equal(safe.coef_, head.coef_) and np.array_equal(safe.classes_, head.classes_)
print(json.dumps({"tag": old.tag, "added": added, "again": again, "same": bool(same)}))
"""


def test_versions_saved_before_safe_heads_get_theirs_from_their_own_pickle(tmp_path: Path) -> None:
    from tests.test_store_retention import run_in_store

    result = run_in_store(tmp_path, OLD_VERSION)
    assert result["added"] == [result["tag"]] and result["again"] == [] and result["same"]


PICKLE_ONLY_VERSION = """
import json
import joblib, numpy as np
from sklearn.linear_model import LogisticRegression
from fewshot import store
head = LogisticRegression().fit(np.random.default_rng(0).random((12, 4)), [0, 1, 2] * 4)
old = store.register("old", lambda d: joblib.dump(head, d / "model_head.pkl"),
                     {"created_at": "2026-11-01T00:00:00+00:00", "labels": ["a", "b", "c"]})
print(json.dumps({"tag": old.tag, "path": str(old.path)}))
"""


def test_a_trainer_gives_old_versions_their_safe_head_when_it_starts(tmp_path: Path) -> None:
    """As the README says it happens: a real `python -m trainers.consumer` starting on a store that holds
    a version with its head only as a pickle (saved before heads were saved twice)."""
    from tests.test_store_retention import run_in_store, store_env

    old = run_in_store(tmp_path, PICKLE_ONLY_VERSION)
    version = Path(old["path"])
    assert not has_safe_head(version)
    log = tmp_path / "trainer.log"
    env = {**store_env(tmp_path), "MODEL_PATH": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    with open(log, "ab") as output:
        trainer = subprocess.Popen([sys.executable, "-m", "trainers.consumer"], cwd=PROJECT_ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "trainer consumer started" not in log.read_text(errors="replace"):
            assert trainer.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
    finally:
        trainer.terminate()
        trainer.wait(60)
    assert has_safe_head(version)
    assert f"{old['tag']}: saved its head without pickle too" in log.read_text()
