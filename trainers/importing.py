"""Import a SetFit classifier made elsewhere: an import job from its record to a registered version.

source (a Hub snapshot, or a directory inside LOCAL_MODEL_DIRS) → loaded without unpickling its
head unless TRUST_PICKLED_HEADS allows it (trainers/heads.py) → checked to be a single-label
classifier with probabilities → label names (the model's, or the request's) → scored on
`eval_examples` when given → registered as a new version, served like any trained one.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from setfit import SetFitModel

from fewshot import store
from fewshot.api.training_schemas import ImportRequest
from fewshot.base_models import (
    HUB_HINT,
    REMOTE_CODE_HINT,
    BaseModelSource,
    failure_reason,
    links_out_problem,
    resolve_base_model,
)
from fewshot.records.jobs import JobRecord
from fewshot.records.outcomes import DEFAULT_ABSTENTION_COVERAGE
from fewshot.serving.backends import MAX_CALIBRATION_TEXTS
from fewshot.settings import Settings
from fewshot.timestamps import utc_now
from trainers.errors import TrainingFailed
from trainers.heads import PICKLED_HEAD_FILE, UnsafeHead, has_safe_head, load_safe_head
from trainers.holdout import Evaluation, evaluation_metadata
from trainers.run import JobOutcome, prune_old_versions
from trainers.thresholds import evaluate_single_label, untested_abstention
from trainers.training import hub_mixin_config, save_classifier

logger = logging.getLogger("fewshot.trainer")

# Files a Hub snapshot may hold that loading a SetFit model never reads (other frameworks' weights,
# exports): not downloaded.
UNUSED_HUB_FILES = ["*.onnx", "onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*",
                    "rust_model*", "*.tflite", "coreml/*"]
SETFIT_CONFIG_FILE = "config_setfit.json"


@dataclass
class ImportedClassifier:
    model: SetFitModel
    labels: list[str]
    """The label of each probability column, in column order (the head's classes are 0..n-1)."""
    evaluation: Evaluation | None
    revision: str | None
    """The Hub commit downloaded; None for a local directory."""
    calibration_texts: list[str]

    def save(self, directory: Path) -> None:
        save_classifier(self.model, directory, self.calibration_texts)


def run_import(record: JobRecord, settings: Settings,
               before_registering: Callable[[], None] | None = None) -> JobOutcome:
    request = ImportRequest.model_validate(record.request)
    source = resolve_base_model(request.source)
    directory, revision = fetch(source, request.revision, settings.hf_token, settings.local_model_dirs)
    logger.info("job %s: importing %s from %s", record.job_id, request.model_name, directory)
    model = load_classifier(directory, request.source, allow_pickle=settings.trust_pickled_heads,
                            trust_remote_code=settings.trust_remote_code)
    labels = name_columns(model, request.labels)
    evaluation = score(model, labels, [(e.text, e.label) for e in request.eval_examples or []])
    eval_texts = [e.text for e in request.eval_examples or []]
    imported = ImportedClassifier(model, labels, evaluation, revision, eval_texts[:MAX_CALIBRATION_TEXTS])
    if before_registering is not None:
        before_registering()
    stored = store.register(request.model_name, imported.save, import_metadata(record, request, imported))
    logger.info("job %s: registered %s (imported; accuracy %s)", record.job_id, stored.tag,
                evaluation and round(evaluation.accuracy, 4))
    prune_old_versions(record, request.model_name, settings)
    return JobOutcome(stored.version)


def fetch(source: BaseModelSource, revision: str | None, token: str | None,
          local_dirs: Sequence[Path]) -> tuple[Path, str | None]:
    """A local directory holding the model, and the Hub commit it was downloaded at (None if local)."""
    if source.is_local:
        directory = Path(source.location)
        if not directory.is_dir():
            raise TrainingFailed(f"source {source.requested!r} is not a directory")
        refuse_links_out(directory, source.requested, [directory, *local_dirs], "LOCAL_MODEL_DIRS")
        return directory, None
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(source.location, revision=revision, token=token,
                                      ignore_patterns=UNUSED_HUB_FILES))
    except Exception as error:  # not found, gated, offline: the same advice
        raise TrainingFailed(
            f"source {source.requested!r} could not be downloaded from the Hugging Face Hub "
            f"({failure_reason(error)}); {HUB_HINT} (and `revision`, when given); or copy the model into a "
            "directory inside LOCAL_MODEL_DIRS and import that") from error
    # A snapshot's files are links into the blobs of the model's own cache folder, and only there.
    refuse_links_out(path, source.requested, [path.parent.parent], "the model's Hugging Face cache folder")
    return path, path.name  # the snapshot directory is named by its commit


def refuse_links_out(directory: Path, requested: str, roots: Sequence[Path], where: str) -> None:
    if (problem := links_out_problem(directory, roots, where)) is not None:
        raise TrainingFailed(f"source {requested!r} {problem}")


def _describe_contents(directory: Path) -> str:
    names = sorted(entry.name for entry in directory.iterdir())
    if (directory / "modules.json").is_file():
        kind = "a sentence-transformers model without a SetFit classification head"
    elif (directory / "config.json").is_file():
        kind = "a transformers model, not a SetFit model"
    else:
        kind = "no model files"
    listed = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
    return f"found {kind} ({listed or 'an empty directory'})"


def load_classifier(directory: Path, requested: str, allow_pickle: bool, trust_remote_code: bool) -> SetFitModel:
    """The SetFit model in `directory`, its head read from the safe copy when there is one; a pickled
    head only with `allow_pickle` (TRUST_PICKLED_HEADS). Raises TrainingFailed saying what is wrong."""
    safe = has_safe_head(directory)
    if not safe and not (directory / PICKLED_HEAD_FILE).is_file():
        raise TrainingFailed(f"source {requested!r} is not a SetFit classifier: {_describe_contents(directory)}; "
                             f"a SetFit model has a classification head ({PICKLED_HEAD_FILE} or "
                             "model_head.skops). To train a classifier on this model, use it as base_model in "
                             "POST /v1/train")
    if not safe and not allow_pickle:
        raise TrainingFailed(
            f"source {requested!r} has its head only as {PICKLED_HEAD_FILE}, a pickle, and loading a pickle runs "
            "whatever code it contains: refused. If you trust where the model comes from, the operator can set "
            "TRUST_PICKLED_HEADS=true; models downloaded from this service carry a safe copy (model_head.skops) "
            "and import without it")
    try:
        with tempfile.TemporaryDirectory(prefix="fewshot-import-") as view:
            # SetFit unpickles model_head.pkl whenever the directory has one: it loads from a view of
            # the directory without it when the head is read from its safe copy, and without the
            # config.json that SetFit itself cannot read back (a static-embedding body's: hub_mixin_config).
            left_out = {hub_mixin_config(directory), directory / PICKLED_HEAD_FILE if safe else None}
            for entry in directory.iterdir():
                if entry not in left_out:
                    (Path(view) / entry.name).symlink_to(entry.resolve())
            model = SetFitModel.from_pretrained(view, trust_remote_code=trust_remote_code)
        if safe:
            model.model_head = load_safe_head(directory, device=str(model.device))
    except UnsafeHead as unsafe:
        raise TrainingFailed(f"source {requested!r}: its head was refused: {unsafe}") from unsafe
    except Exception as error:
        reason = failure_reason(error)
        hint = REMOTE_CODE_HINT if "trust_remote_code" in reason else (
            "it must be a directory saved by SetFitModel.save_pretrained")
        raise TrainingFailed(
            f"source {requested!r} could not be loaded as a SetFit model ({reason}); {hint}") from error
    _check_single_label_classifier(model, requested)
    return model


def _check_single_label_classifier(model: SetFitModel, requested: str) -> None:
    head: Any = model.model_head
    if model.multi_target_strategy is not None or getattr(head, "multitarget", False):
        raise TrainingFailed(f"source {requested!r} is a multi-label SetFit model (multi_target_strategy "
                             f"{model.multi_target_strategy!r}); only single-label classifiers are served")
    if model.has_differentiable_head:
        return
    if not hasattr(head, "predict_proba"):
        raise TrainingFailed(f"source {requested!r}: its head ({type(head).__name__}) gives no probabilities "
                             "(no predict_proba); only heads that do can be served")
    classes = getattr(head, "classes_", None)
    if classes is None:
        raise TrainingFailed(f"source {requested!r}: its head ({type(head).__name__}) was never trained "
                             "(no classes_)")
    # SetFit does not save multi_target_strategy: a multi-label head shows itself (one-vs-rest's
    # multilabel_, multi-output's per-label lists, probabilities that do not sum to 1 across classes).
    probabilities = head.predict_proba(model.encode(["a probe text"], show_progress_bar=False))
    if (getattr(head, "multilabel_", False) or isinstance(probabilities, list) or np.ndim(probabilities) != 2
            or not np.allclose(np.sum(probabilities, axis=1), 1.0, atol=1e-3)):
        raise TrainingFailed(f"source {requested!r} is a multi-label model (its head, {type(head).__name__}, gives "
                             "one probability per label, not one distribution over classes); only single-label "
                             "classifiers are served")


def name_columns(model: SetFitModel, requested: list[str] | None) -> list[str]:
    """The label of each probability column; leaves the model with classes 0..n-1 and those labels.

    From `requested` when given (column order); else the head's classes when they are names; else
    the model's `labels` (SetFit maps class id i to labels[i]). A model with none fails.
    """
    head: Any = model.model_head
    classes = None if model.has_differentiable_head else list(head.classes_)
    count = head.out_features if classes is None else len(classes)
    if requested is not None:
        if len(requested) != count:
            raise TrainingFailed(f"labels: the model's head has {count} classes, but {len(requested)} labels were "
                                 "given; send one name per class, in class order")
        columns = list(requested)
    elif classes is not None and all(isinstance(c, str) for c in classes):
        columns = [str(c) for c in classes]
    elif model.labels:
        ids = list(range(count)) if classes is None else classes
        if not all(isinstance(i, int | np.integer) and 0 <= int(i) < len(model.labels) for i in ids):
            raise TrainingFailed(f"the model's labels ({len(model.labels)}) do not name its head's classes "
                                 f"({', '.join(map(str, ids[:10]))}); send `labels`, one per class in class order")
        columns = [model.labels[int(i)] for i in ids]
    else:
        raise TrainingFailed(f"the model has no label names (no `labels` in its {SETFIT_CONFIG_FILE}, and its "
                             f"head's classes are {', '.join(map(str, (classes or list(range(count)))[:10]))}); "
                             f"send `labels`: {count} names, one per class in class order")
    if len(set(columns)) != len(columns):
        raise TrainingFailed(f"label names must be distinct; the model's are: {', '.join(columns[:20])}")
    if classes is not None:
        head.classes_ = np.arange(count)  # predict_proba's columns are unchanged; class i is columns[i]
    model.labels = columns
    return columns


def score(model: SetFitModel, labels: list[str], examples: list[tuple[str, str | None]]) -> Evaluation | None:
    """Accuracy and per-label metrics on `examples`, and the abstention threshold learned on them
    (`label: null` ones: texts of none of the labels)."""
    if not examples:
        return None
    unknown = sorted({label for _, label in examples if label is not None} - set(labels))
    if unknown:
        raise TrainingFailed(f"eval_examples: labels must be among the model's labels ({', '.join(labels[:20])}); "
                             f"unknown: {', '.join(unknown[:10])}")
    probabilities = np.asarray(model.predict_proba([text for text, _ in examples], as_numpy=True,
                                                   show_progress_bar=False))
    return evaluate_single_label(probabilities, labels, [label for _, label in examples], labels,
                                 DEFAULT_ABSTENTION_COVERAGE, none_of_these_examples=0)


def import_metadata(record: JobRecord, request: ImportRequest, imported: ImportedClassifier) -> dict[str, Any]:
    evaluation = imported.evaluation
    return {
        "base_model": request.source,
        "source": request.source,
        "revision": imported.revision,
        "created_at": utc_now().isoformat(),
        "strategy": "imported",
        "task": "single_label",
        **evaluation_metadata(evaluation),
        "abstention": (evaluation.abstention if evaluation else
                       untested_abstention(DEFAULT_ABSTENTION_COVERAGE, none_of_these_examples=0)).model_dump(),
        "eval_source": "eval_examples" if evaluation else None,
        "labels": imported.labels,
        "job_id": record.job_id,
    }
