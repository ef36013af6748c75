"""Train one SetFit classifier: examples + options → trained model + honest metrics.

No queue, no store, no HTTP: callable from a test or a notebook as it is.
"""

from __future__ import annotations

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
from fewshot.classifier import best_labels, column_labels
from trainers.errors import TrainingFailed
from trainers.holdout import accuracy, choose_holdout_fraction, stratified_split

logger = logging.getLogger("fewshot.training")

ProgressCallback = Callable[[int, int], None]
"""Called with (steps done, total steps) while the body is fine-tuned."""


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


@dataclass
class TrainedClassifier:
    model: SetFitModel
    labels: list[str]
    accuracy: float | None
    num_examples: int
    eval_num_examples: int
    training_duration_seconds: float

    def save(self, directory: Path) -> None:
        self.model.save_pretrained(str(directory))


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
                    trust_remote_code: bool = False) -> SetFitModel:
    try:
        return SetFitModel.from_pretrained(source.location, labels=labels, token=hf_token,
                                           trust_remote_code=trust_remote_code)
    except Exception as error:  # every loader failure means the same thing to the user
        raise TrainingFailed(load_failure_message(source, error)) from error


def train_classifier(texts: Sequence[str], labels: Sequence[str], options: TrainingOptions,
                     progress: ProgressCallback | None = None) -> TrainedClassifier:
    label_names = sorted(set(labels))
    label_ids = {label: index for index, label in enumerate(label_names)}
    fraction = choose_holdout_fraction(Counter(labels), options.holdout_fraction)
    pairs = list(zip(texts, labels, strict=True))
    train_pairs, holdout_pairs = stratified_split(pairs, list(labels), fraction, options.seed)

    model = load_base_model(options.base_model, label_names, options.hf_token, options.trust_remote_code)
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
            train_dataset=Dataset.from_dict({
                "text": [text for text, _ in train_pairs],
                "label": [label_ids[label] for _, label in train_pairs],
            }),
            # SetFit's default metric downloads from the Hub; we score the hold-out ourselves.
            metric=lambda predicted, expected: {"accuracy": float(np.mean(np.asarray(predicted) == expected))},
            callbacks=[
                *([_ReportProgress(progress)] if progress else []),
                *([_Deadline(options.max_seconds)] if options.max_seconds else []),
            ] or None,
        )
        trainer.train()
    duration = time.perf_counter() - started

    holdout_accuracy = None
    if holdout_pairs:
        probabilities = model.predict_proba([text for text, _ in holdout_pairs], as_numpy=True)
        predicted, _ = best_labels(np.asarray(probabilities), column_labels(model, label_names))
        holdout_accuracy = accuracy([label for _, label in holdout_pairs], predicted)
    logger.info("trained on %d examples (%d held out) in %.1fs, accuracy %s",
                len(train_pairs), len(holdout_pairs), duration, holdout_accuracy)
    return TrainedClassifier(
        model=model,
        labels=label_names,
        accuracy=holdout_accuracy,
        num_examples=len(pairs),
        eval_num_examples=len(holdout_pairs),
        training_duration_seconds=duration,
    )
