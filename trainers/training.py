"""Train one SetFit classifier: examples + options → trained model + honest metrics.

Two ways to train, both scored on the same evaluation split:
- `train_head`: the base model's body stays frozen; only the logistic-regression head is fitted
  on its embeddings (seconds);
- `fine_tune`: SetFit's contrastive fine-tuning of the body, then the head (the seed's way).

No queue, no store, no HTTP: callable from a test, a benchmark or a notebook as it is.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset
from setfit import SetFitModel, Trainer, TrainingArguments
from transformers import TrainerCallback

from fewshot.base_models import BaseModelSource, load_failure_message
from fewshot.serving.backends import MAX_CALIBRATION_TEXTS
from fewshot.serving.labels import best_labels, column_labels
from fewshot.store import CALIBRATION_TEXTS_FILE
from trainers.errors import TrainingFailed
from trainers.heads import save_safe_head
from trainers.holdout import Evaluation, choose_holdout_fraction, evaluate, stratified_split

logger = logging.getLogger("fewshot.training")

ProgressCallback = Callable[[int, int], None]
"""Called with (steps done, total steps) while the body is fine-tuned."""

LabelledText = tuple[str, str]


@dataclass(frozen=True)
class TrainingOptions:
    base_model: BaseModelSource
    num_iterations: int = 20
    learning_rate: float = 2e-5
    batch_size: int = 16
    holdout_fraction: float | None = None
    seed: int = 42
    hf_token: str | None = None
    trust_remote_code: bool = False
    max_seconds: float | None = None
    """Fine-tuning time after which training stops with TrainingFailed (MAX_TRAINING_SECONDS)."""
    class_weight: str | None = "balanced"
    """The head's class weights: "balanced" weighs each label by the inverse of its share, so a
    label with few examples is not drowned by a frequent one (identical to none when balanced)."""


@dataclass(frozen=True)
class Split:
    """What is trained on and what is scored on; both strategies of one job use the same split."""

    train: list[LabelledText]
    evaluation: list[LabelledText]
    labels: list[str]
    """Every training label, sorted: the head's classes."""
    separate_evaluation: bool = False
    """The evaluation examples were sent apart from the training ones (eval_examples)."""

    @property
    def num_examples(self) -> int:
        """Examples received for training (a hold-out taken from them included)."""
        return len(self.train) + (0 if self.separate_evaluation else len(self.evaluation))


def split_examples(examples: Sequence[LabelledText], holdout_fraction: float | None, seed: int,
                   eval_examples: Sequence[LabelledText] | None = None) -> Split:
    """Train on everything and score on `eval_examples` when given; else hold out a stratified share."""
    labels = sorted({label for _, label in examples})
    if eval_examples:
        return Split(list(examples), list(eval_examples), labels, separate_evaluation=True)
    fraction = choose_holdout_fraction(Counter(label for _, label in examples), holdout_fraction)
    train, holdout = stratified_split(list(examples), [label for _, label in examples], fraction, seed)
    return Split(train, holdout, labels)


@dataclass
class TrainedClassifier:
    model: SetFitModel
    labels: list[str]
    strategy: str
    """"head" (frozen body) or "setfit" (fine-tuned body)."""
    evaluation: Evaluation | None
    num_examples: int
    training_duration_seconds: float
    calibration_texts: list[str]
    """Training texts kept with the version: OpenVINO's int8 calibration (fewshot/serving/backends.py)."""

    @property
    def accuracy(self) -> float | None:
        return self.evaluation.accuracy if self.evaluation else None

    @property
    def eval_num_examples(self) -> int:
        return self.evaluation.num_examples if self.evaluation else 0

    def save(self, directory: Path) -> None:
        save_classifier(self.model, directory, self.calibration_texts)


def save_classifier(model: SetFitModel, directory: Path, calibration_texts: list[str] | None = None) -> None:
    """SetFit's own directory (its head pickled, as `SetFitModel.from_pretrained` reads it), the
    head again in a format that loads without pickle (trainers/heads.py), which imports read, and
    the texts kept for int8 calibration."""
    model.save_pretrained(str(directory))
    save_safe_head(model.model_head, directory)
    if calibration_texts is not None:
        (directory / CALIBRATION_TEXTS_FILE).write_text(json.dumps(calibration_texts), encoding="utf8")


class _Deadline(TrainerCallback):
    """Stop training once it has run `seconds`; checked after every optimizer step."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() > self._deadline:
            raise TrainingFailed(
                f"training took longer than MAX_TRAINING_SECONDS={self._seconds:g} (stopped after step "
                f"{state.global_step} of {state.max_steps}); lower num_iterations or send fewer examples, "
                "or raise the limit")


class _ReportProgress(TrainerCallback):
    def __init__(self, report: ProgressCallback) -> None:
        self._report = report

    def on_step_end(self, args, state, control, **kwargs):
        self._report(state.global_step, state.max_steps)


def load_base_model(source: BaseModelSource, labels: list[str], hf_token: str | None,
                    trust_remote_code: bool = False, class_weight: str | None = None) -> SetFitModel:
    try:
        return SetFitModel.from_pretrained(source.location, labels=labels, token=hf_token,
                                           trust_remote_code=trust_remote_code,
                                           head_params={"class_weight": class_weight})
    except Exception as error:  # every loader failure means the same thing to the user
        raise TrainingFailed(load_failure_message(source, error)) from error


def _load(split: Split, options: TrainingOptions) -> SetFitModel:
    return load_base_model(options.base_model, split.labels, options.hf_token, options.trust_remote_code,
                           options.class_weight)


def _label_ids(split: Split, pairs: Sequence[LabelledText]) -> list[int]:
    ids = {label: index for index, label in enumerate(split.labels)}
    return [ids[label] for _, label in pairs]


def _evaluate(model: SetFitModel, split: Split) -> Evaluation | None:
    if not split.evaluation:
        return None
    probabilities = model.predict_proba([text for text, _ in split.evaluation], as_numpy=True,
                                        show_progress_bar=False)
    predicted, _ = best_labels(np.asarray(probabilities), column_labels(model, split.labels))
    return evaluate([label for _, label in split.evaluation], predicted, split.labels)


def _finish(model: SetFitModel, split: Split, strategy: str, started: float) -> TrainedClassifier:
    duration = time.perf_counter() - started
    evaluation = _evaluate(model, split)
    logger.info("%s: trained on %d examples in %.1fs; accuracy %s on %d evaluation examples", strategy,
                len(split.train), duration, evaluation and round(evaluation.accuracy, 4), len(split.evaluation))
    texts = [text for text, _ in split.train]
    every = max(1, len(texts) // MAX_CALIBRATION_TEXTS)  # spread over the examples, not the first labels only
    return TrainedClassifier(model=model, labels=split.labels, strategy=strategy, evaluation=evaluation,
                             num_examples=split.num_examples, training_duration_seconds=duration,
                             calibration_texts=texts[::every][:MAX_CALIBRATION_TEXTS])


def train_head(split: Split, options: TrainingOptions) -> TrainedClassifier:
    """The base model's body as it is, and a logistic-regression head fitted on its embeddings."""
    model = _load(split, options)
    logger.info("fitting a head on the frozen body of %s on %s", options.base_model.requested, model.device)
    started = time.perf_counter()
    model.fit([text for text, _ in split.train], _label_ids(split, split.train), num_epochs=1,
              show_progress_bar=False)
    return _finish(model, split, "head", started)


def fine_tune(split: Split, options: TrainingOptions, progress: ProgressCallback | None = None) -> TrainedClassifier:
    """SetFit: contrastive fine-tuning of the body on pairs of examples, then the head."""
    model = _load(split, options)
    logger.info("fine-tuning %s on %s", options.base_model.requested, model.device)
    started = time.perf_counter()
    # Checkpoints and logs go to a temporary directory, never into the working tree.
    with tempfile.TemporaryDirectory(prefix="fewshot-train-") as scratch:
        arguments = TrainingArguments(
            output_dir=scratch,
            num_iterations=options.num_iterations,
            body_learning_rate=options.learning_rate,
            batch_size=options.batch_size,
            seed=options.seed,
            save_strategy="no",
            report_to="none",
            show_progress_bar=False,
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=Dataset.from_dict({"text": [text for text, _ in split.train],
                                             "label": _label_ids(split, split.train)}),
            # SetFit's default metric downloads from the Hub; we score the evaluation split ourselves.
            metric=lambda predicted, expected: {"accuracy": float(np.mean(np.asarray(predicted) == expected))},
            callbacks=[
                *([_ReportProgress(progress)] if progress else []),
                *([_Deadline(options.max_seconds)] if options.max_seconds else []),
            ] or None,
        )
        trainer.train()
    return _finish(model, split, "setfit", started)


