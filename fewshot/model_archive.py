"""A stored version as a portable archive: `<name>-<version>.tar.gz` of one directory that
`SetFitModel.from_pretrained(directory)` loads as it is, with a model card (README.md) saying how it
was made and how well it did. No torch: the gateway builds it.

What leaves the store: SetFit's files (body, tokenizer, `config_setfit.json`, `model_head.pkl`) and
the head's safe copy (`model_head.skops`, trainers/heads.py), which our import reads instead of the
pickle. What stays: BentoML's `model.yaml` (its metadata is in the card) and the training texts kept
for int8 calibration (the user's data, not the model).
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from fewshot import __version__
from fewshot.serving.scope import SCOPE_FILE
from fewshot.store import CALIBRATION_TEXTS_FILE, MODEL_INFO_FILE, TRAINING_EXAMPLES_FILE, StoredModel

ARCHIVE_MEDIA_TYPE = "application/gzip"
MODEL_CARD_FILE = "README.md"
LEFT_IN_THE_STORE = frozenset({MODEL_INFO_FILE, CALIBRATION_TEXTS_FILE, MODEL_CARD_FILE, SCOPE_FILE,
                               TRAINING_EXAMPLES_FILE})
"""Not in a download: the store's own record, and what is derived from the user's examples (texts kept for
int8 calibration, the training embeddings of the scope score): data, not the model."""


def archive_name(stored: StoredModel) -> str:
    return f"{stored.name}-{stored.version}.tar.gz"


def write_archive(stored: StoredModel, destination: BinaryIO) -> None:
    """The version's directory as `<name>-<version>/` in a gzip'd tar, its model card included.
    Raises FileNotFoundError when the version is deleted meanwhile."""
    top = f"{stored.name}-{stored.version}"
    with tarfile.open(fileobj=destination, mode="w:gz") as archive:
        for path in sorted(stored.path.rglob("*")):
            relative = path.relative_to(stored.path)
            if relative.parts[0] in LEFT_IN_THE_STORE or path.is_dir():
                continue
            archive.add(path, arcname=f"{top}/{relative.as_posix()}", recursive=False)
        card = model_card(stored).encode()
        info = tarfile.TarInfo(f"{top}/{MODEL_CARD_FILE}")
        info.size, info.mtime, info.mode = len(card), int(time.time()), 0o644
        archive.addfile(info, io.BytesIO(card))


def write_archive_file(stored: StoredModel) -> Path:
    """The archive in a temporary file (the caller removes it once sent): a download is then sent at
    the client's pace from disk, with its length known, and no half-built archive is ever sent."""
    handle = tempfile.NamedTemporaryFile(prefix="fewshot-download-", suffix=".tar.gz", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    try:
        with handle:
            write_archive(stored, handle)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _number(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _decision_lines(meta: dict[str, Any]) -> list[str]:
    """How the service turns this version's probabilities into answers, which plain SetFit does not know."""
    thresholds = meta.get("thresholds")
    if meta.get("task") == "multi_label" and thresholds:
        return ["", "## Thresholds", "", "Multi-label (one-vs-rest head). SetFit's `model.predict` answers each label "
                "at probability 0.5; the service predicts a label when `model.predict_proba` reaches its learned "
                "threshold:", "", "| label | threshold |", "|---|---|",
                *(f"| `{label}` | {_number(value)} |" for label, value in thresholds.items())]
    abstention = meta.get("abstention") or {}
    lines = []
    if abstention.get("none_of_these_examples"):
        lines.append(f"Trained with {abstention['none_of_these_examples']} \"none of these\" examples: the head's "
                     "last class is theirs, and SetFit's `model.predict` answers `None` for it.")
    scope = meta.get("scope") or {}
    if scope.get("threshold") is not None:
        lines.append(f"Out-of-scope threshold {_number(scope['threshold'])} on the cosine similarity to the nearest "
                     f"training example (keeps {scope.get('coverage')} of in-scope texts, set on "
                     f"{scope.get('calibration_examples')} of them): below it the service answers no label when "
                     "asked to abstain. Plain SetFit does not know it, and a download leaves the training embeddings "
                     "it reads in the store: an imported copy abstains by its top probability.")
    elif abstention.get("threshold") is not None:
        lines.append(f"Abstention threshold {_number(abstention['threshold'])} (keeps "
                     f"{abstention.get('coverage')} of in-scope texts): below this top probability the service "
                     "answers no label when asked to abstain.")
    return ["", "## Abstention", "", *lines] if lines else []


def _confusion_lines(meta: dict[str, Any]) -> list[str]:
    """The single-label confusion matrix (the metadata's counts) as a table: true labels by row."""
    matrix = meta.get("confusion_matrix")
    if not matrix:
        return []
    names = [f"`{label}`" for label in matrix["labels"]] + (["none of these"] if matrix.get("none_of_these") else [])
    return ["", "Confusion matrix of the same examples (rows: the true label; columns: the answer):", "",
            f"| true \\ answer | {' | '.join(names)} |", f"|---|{'---|' * len(names)}",
            *(f"| {name} | {' | '.join(str(count) for count in row)} |"
              for name, row in zip(names, matrix["counts"], strict=True))]


def model_card(stored: StoredModel) -> str:
    """Markdown with Hugging Face's front matter: what the version is, how it was made, how it scored."""
    meta = stored.metadata
    imported = meta.get("strategy") == "imported"
    labels = list(meta.get("labels", []))
    front = ["---", "library_name: setfit", "pipeline_tag: text-classification",
             "tags: [setfit, sentence-transformers, text-classification, fewshot]"]
    if not imported and meta.get("base_model"):
        front.append(f"base_model: {meta['base_model']}")
    lines = [*front, "---", "", f"# {stored.tag}", "",
             f"A SetFit text classifier with {len(labels)} labels, exported by fewshot {__version__} "
             f"(a self-hosted service for few-shot classification).", "",
             "## Use it", "", "```python", "from setfit import SetFitModel", "",
             f'model = SetFitModel.from_pretrained("{stored.name}-{stored.version}")  # this directory',
             'print(model.predict(["your text"]))', "```", "",
             "The head is here twice: `model_head.pkl` (SetFit's own, a pickle) and `model_head.skops` (the same "
             "head in scikit-learn's safe format, which loads without running code: `skops.io.load`). "
             "fewshot's `POST /v1/models/import` reads the safe one.", "",
             "## How it was made", "", "| | |", "|---|---|"]
    if imported:
        rows = [("source", f"imported from `{meta.get('source')}`" + (f" at revision `{meta['revision']}`"
                                                                       if meta.get("revision") else ""))]
    else:
        rows = [("base model", f"`{meta.get('base_model')}`"),
                ("strategy", {"setfit": "SetFit: contrastive fine-tuning of the body, then the head",
                              "head": "head only, on the frozen base body"}.get(meta.get("strategy", "setfit"),
                                                                                 str(meta.get("strategy")))),
                ("training examples", _number(meta.get("num_examples"))),
                ("training time", f"{_number(meta.get('training_duration_seconds'), 1)} s")]
        rows += [(name.replace("_", " "), _number(meta.get(name), 6)) for name in
                 ("num_iterations", "learning_rate", "batch_size") if meta.get(name) is not None]
    rows += [("labels", ", ".join(f"`{label}`" for label in labels)),
             ("registered", str(meta.get("created_at"))),
             ("version", f"`{stored.tag}`")]
    lines += [f"| {key} | {value} |" for key, value in rows]
    lines += ["", "## Evaluation", ""]
    accuracy = meta.get("accuracy")
    if accuracy is None:
        lines.append("Not evaluated: no evaluation examples (too few examples per label for a hold-out, and no "
                     "`eval_examples`).")
    else:
        measured_on = {"holdout": "a stratified hold-out of the examples (not trained on)",
                       "eval_examples": "evaluation examples sent with the request"}.get(meta.get("eval_source"),
                                                                                        "evaluation examples")
        name = "Subset accuracy (exact label sets)" if meta.get("task") == "multi_label" else "Accuracy"
        f1 = (f"; micro F1 **{_number(meta.get('micro_f1'))}**, macro F1 **{_number(meta.get('macro_f1'))}**"
              if meta.get("task") == "multi_label" else "")
        lines += [f"{name} **{accuracy:.4f}**{f1} on {meta.get('eval_num_examples')} examples: {measured_on}.", "",
                  "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for label, scores in (meta.get("label_metrics") or {}).items():
            lines.append(f"| `{label}` | {_number(scores.get('precision'))} | {_number(scores.get('recall'))} | "
                         f"{_number(scores.get('f1'))} | {scores.get('support')} |")
        lines += _confusion_lines(meta)
    lines += _decision_lines(meta)
    comparison = meta.get("comparison")
    if comparison:
        metric = comparison.get("metric", "accuracy")
        head, tuned = _number(comparison.get(f"head_{metric}")), _number(comparison.get(f"setfit_{metric}"))
        lines += ["", f"Strategy auto: {comparison.get('reason')} ({metric.replace('_', ' ')}: head {head}, "
                      f"fine-tuned {tuned})."]
    return "\n".join(lines) + "\n"

