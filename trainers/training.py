"""Train one SetFit classifier: examples + options → trained model + honest metrics.

Single-label (one label per text, or none of them: `label: null` examples are a class of their
own) or multi-label (a set of labels per text: a one-vs-rest head and a threshold per label).
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
from fewshot.records.embedding_cache import EmbeddingCache
from fewshot.records.outcomes import DEFAULT_ABSTENTION_COVERAGE, Abstention, Scope, Target, target_labels
from fewshot.serving.backends import MAX_CALIBRATION_TEXTS
from fewshot.serving.decisions import DEFAULT_THRESHOLD
from fewshot.serving.labels import column_labels
from fewshot.serving.long_texts import AUTO, TRUNCATE
from fewshot.serving.scope import ScopeIndex
from fewshot.store import CALIBRATION_TEXTS_FILE, TRAINING_EXAMPLES_FILE
from trainers.errors import TrainingFailed
from trainers.heads import save_safe_head
from trainers.holdout import (
    Evaluation,
    choose_holdout_fraction,
    keep_every_label_in_training,
    multi_label_strata,
    stratified_split,
)
from trainers.long_texts import LongTextsChoice, choose, embed_texts
from trainers.scope import fit_scope
from trainers.thresholds import evaluate_multi_label, evaluate_single_label, untested_abstention

logger = logging.getLogger("fewshot.training")

ProgressCallback = Callable[[int, int], None]
"""Called with (steps done, total steps) while the body is fine-tuned."""

LabelledText = tuple[str, Target]
DEFAULT_SEED = 42
"""The hold-out split's and fine-tuning's seed: a request's split is the same each time it is made."""


@dataclass(frozen=True)
class TrainingOptions:
    base_model: BaseModelSource
    num_iterations: int = 20
    learning_rate: float = 2e-5
    batch_size: int = 16
    holdout_fraction: float | None = None
    seed: int = DEFAULT_SEED
    hf_token: str | None = None
    trust_remote_code: bool = False
    max_seconds: float | None = None
    """Fine-tuning time after which training stops with TrainingFailed (MAX_TRAINING_SECONDS)."""
    class_weight: str | None = "balanced"
    """The head's class weights: "balanced" weighs each label by the inverse of its share, so a
    label with few examples is not drowned by a frequent one (identical to none when balanced).
    Multi-label: each label's one-vs-rest classifier weighs its positives against its negatives."""
    abstention_coverage: float = DEFAULT_ABSTENTION_COVERAGE
    """Single-label: the share of in-scope texts the abstention threshold keeps (trainers/thresholds.py)."""
    long_texts: str = AUTO
    """How the version reads a text longer than its window (fewshot/serving/long_texts.py; auto:
    trainers/long_texts.py picks one on the examples)."""


@dataclass(frozen=True)
class Split:
    """What is trained on and what is scored on; both strategies of one job use the same split."""

    train: list[LabelledText]
    evaluation: list[LabelledText]
    labels: list[str]
    """Every training label, sorted: the head's classes (a single-label head has one more, "none of
    these", when the examples include `label: null` ones)."""
    multi_label: bool = False
    separate_evaluation: bool = False
    """The evaluation examples were sent apart from the training ones (eval_examples)."""

    @property
    def num_examples(self) -> int:
        """Examples received for training (a hold-out taken from them included)."""
        return len(self.train) + (0 if self.separate_evaluation else len(self.evaluation))

    @property
    def none_of_these_examples(self) -> int:
        """Single-label training examples with `label: null`: the head learns them as a class of their own."""
        return 0 if self.multi_label else sum(target is None for _, target in self.train)

    @property
    def refuses(self) -> bool:
        return self.none_of_these_examples > 0

    @property
    def head_labels(self) -> list[str | None]:
        """SetFit's labels of the head's classes: "none of these" is None there too (SetFit's own
        predict answers None for it)."""
        return [*self.labels, None] if self.refuses else list(self.labels)


def split_examples(examples: Sequence[LabelledText], holdout_fraction: float | None, seed: int,
                   eval_examples: Sequence[LabelledText] | None = None) -> Split:
    """Train on everything and score on `eval_examples` when given; else hold out a stratified share
    (multi-label: by each example's rarest label, every label kept in training)."""
    multi_label = isinstance(examples[0][1], tuple)
    counts = Counter(label for _, target in examples for label in target_labels(target))
    labels = sorted(counts)
    if eval_examples:
        return Split(list(examples), list(eval_examples), labels, multi_label, separate_evaluation=True)
    fraction = choose_holdout_fraction(counts, holdout_fraction)
    targets = [target for _, target in examples]
    # "" (no label may be blank) is the stratum of `label: null` and `labels: []` examples.
    strata = multi_label_strata(targets) if multi_label else [target or "" for target in targets]  # type: ignore[misc]
    train, holdout = stratified_split(list(examples), strata, fraction, seed)
    if multi_label:
        train, holdout = keep_every_label_in_training(train, holdout, lambda example: target_labels(example[1]))
    return Split(train, holdout, labels, multi_label)


@dataclass
class TrainedClassifier:
    model: SetFitModel
    labels: list[str]
    strategy: str
    """"head" (frozen body) or "setfit" (fine-tuned body)."""
    evaluation: Evaluation | None
    multi_label: bool
    thresholds: dict[str, float] | None
    """Multi-label: each label's threshold (learned, or the default without evaluation examples)."""
    abstention: Abstention | None
    """Single-label: the abstention threshold and its metrics."""
    num_examples: int
    training_duration_seconds: float
    calibration_texts: list[str]
    """Training texts kept with the version: OpenVINO's int8 calibration (fewshot/serving/backends.py)."""
    embeddings: EmbeddingCache | None = None
    """The texts it embedded with its body, kept for the next retrain and the label audit."""
    scope: Scope | None = None
    """Single-label: how it tells foreign texts apart (trainers/scope.py)."""
    scope_index: ScopeIndex | None = None
    """Single-label: its training embeddings, which the scope score reads (saved with the version)."""
    trained_on: list[LabelledText] | None = None
    """The examples it was trained on (saved with the version: a retrain's promotion judges it without them)."""
    long_texts: LongTextsChoice | None = None
    """How it reads a text longer than its window, and why (None: truncate, as before the choice)."""

    @property
    def long_texts_policy(self) -> str:
        return self.long_texts.policy if self.long_texts else TRUNCATE

    @property
    def accuracy(self) -> float | None:
        return self.evaluation.accuracy if self.evaluation else None

    @property
    def micro_f1(self) -> float | None:
        return self.evaluation.micro_f1 if self.evaluation else None

    def save(self, directory: Path) -> None:
        save_classifier(self.model, directory, self.calibration_texts)
        if self.scope_index is not None:
            self.scope_index.save(directory)
        if self.trained_on is not None:
            (directory / TRAINING_EXAMPLES_FILE).write_text(json.dumps(
                [[text, list(target) if isinstance(target, tuple) else target] for text, target in self.trained_on],
                ensure_ascii=False), encoding="utf8")


def save_classifier(model: SetFitModel, directory: Path, calibration_texts: list[str] | None = None) -> None:
    """SetFit's own directory (its head pickled, as `SetFitModel.from_pretrained` reads it), the
    head again in a format that loads without pickle (trainers/heads.py), which imports read, and
    the texts kept for int8 calibration."""
    model.save_pretrained(str(directory))
    if (mixin_config := hub_mixin_config(directory)) is not None:
        mixin_config.unlink()
    save_safe_head(model.model_head, directory)
    if calibration_texts is not None:
        (directory / CALIBRATION_TEXTS_FILE).write_text(json.dumps(calibration_texts), encoding="utf8")


def hub_mixin_config(directory: Path) -> Path | None:
    """The directory's config.json when huggingface_hub wrote it for SetFitModel itself, or None.

    Upstream: huggingface_hub's ModelHubMixin saves a model's own init arguments as config.json unless
    the model writes one; a SetFit body does (the transformer's), but a static-embedding one has no
    transformers config, and `SetFitModel.from_pretrained` then fails on that file (setfit 1.2.0,
    huggingface_hub 1.x: "SetFitModelCardData.__init__() got an unexpected keyword argument 'absa'",
    a field of the card that its __init__ does not take). SetFit's settings are in config_setfit.json
    either way, so the file holds nothing needed. Not reported upstream that we found."""
    config = directory / "config.json"
    if not config.is_file():
        return None
    try:
        written = json.loads(config.read_text(encoding="utf8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return config if isinstance(written, dict) and "model_card_data" in written else None


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


def load_base_model(source: BaseModelSource, labels: list[str | None], hf_token: str | None,
                    trust_remote_code: bool = False, class_weight: str | None = None,
                    multi_label: bool = False) -> SetFitModel:
    try:
        # One-vs-rest: one binary classifier per label, each giving that label's own probability,
        # which a per-label threshold then decides on (trainers/thresholds.py); SetFit's other two
        # strategies condition labels on each other (classifier-chain) or are one-vs-rest again
        # in another shape (multi-output: per-label lists of two columns).
        return SetFitModel.from_pretrained(source.location, labels=labels, token=hf_token,
                                           trust_remote_code=trust_remote_code,
                                           multi_target_strategy="one-vs-rest" if multi_label else None,
                                           head_params={"class_weight": class_weight})
    except Exception as error:  # every loader failure means the same thing to the user
        raise TrainingFailed(load_failure_message(source, error)) from error


def load_version_body(version_path: Path, split: Split, options: TrainingOptions) -> SetFitModel:
    """A stored version's body (fine-tuned or not) under a new, unfitted head, as SetFit builds one:
    where a retrain starts. The version's own head (a pickle) is never read."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    head = LogisticRegression(class_weight=options.class_weight)
    try:
        return version_body_with(version_path, OneVsRestClassifier(head) if split.multi_label else head,
                                 options.trust_remote_code, labels=split.head_labels,
                                 multi_target_strategy="one-vs-rest" if split.multi_label else None)
    except Exception as error:
        raise TrainingFailed(f"the version to retrain from could not be loaded ({type(error).__name__}: {error})") \
            from error


def version_body_with(version_path: Path, head: object, trust_remote_code: bool = False,
                      **setfit: object) -> SetFitModel:
    """A stored version's body (and its `normalize_embeddings`, from config_setfit.json) under `head`."""
    from sentence_transformers import SentenceTransformer

    config_file = version_path / "config_setfit.json"
    config = json.loads(config_file.read_text(encoding="utf8")) if config_file.is_file() else {}
    body = SentenceTransformer(str(version_path), trust_remote_code=trust_remote_code)
    return SetFitModel(model_body=body, model_head=head,
                       normalize_embeddings=bool(config.get("normalize_embeddings", False)), **setfit)


def embed(model: SetFitModel, texts: Sequence[str], cache: EmbeddingCache, long_texts: str = TRUNCATE) -> np.ndarray:
    """The body's embeddings of `texts` (as SetFit feeds its head; a text longer than the window read by
    `long_texts`), those in `cache` not computed again; the new ones are added to it."""
    missing = list(dict.fromkeys(text for text in texts if text not in cache))
    if missing:
        cache.update(zip(missing, embed_texts(model, missing, long_texts), strict=True))
    return np.stack([cache[text] for text in texts]) if texts else np.empty((0, 0), dtype=np.float32)


def _load(split: Split, options: TrainingOptions) -> SetFitModel:
    return load_base_model(options.base_model, split.head_labels, options.hf_token, options.trust_remote_code,
                           options.class_weight, split.multi_label)


def _targets(split: Split, pairs: Sequence[LabelledText]) -> list[int] | list[list[int]]:
    """What the head is fitted on: class ids (None: the "none of these" class, after the labels),
    or one 0/1 row per text over the labels (multi-label)."""
    if split.multi_label:
        return [[int(label in target) for label in split.labels] for _, target in pairs]  # type: ignore[operator]
    ids = {label: index for index, label in enumerate(split.labels)}
    return [len(split.labels) if target is None else ids[target] for _, target in pairs]  # type: ignore[index]


def _evaluate(model: SetFitModel, split: Split, coverage: float, cache: EmbeddingCache,
              long_texts: str) -> Evaluation | None:
    if not split.evaluation:
        return None
    texts = [text for text, _ in split.evaluation]
    # what SetFitModel.predict_proba does (its sklearn head on the body's embeddings), the embeddings kept
    probabilities = np.asarray(model.model_head.predict_proba(embed(model, texts, cache, long_texts)))
    columns = column_labels(model.model_head, split.labels, refuses=split.refuses)
    expected = [target for _, target in split.evaluation]
    if split.multi_label:
        return evaluate_multi_label(probabilities, columns, expected, split.labels)  # type: ignore[arg-type]
    return evaluate_single_label(probabilities, columns, expected, split.labels, coverage,  # type: ignore[arg-type]
                                 split.none_of_these_examples)


def _choose_long_texts(model: SetFitModel, split: Split, options: TrainingOptions) -> LongTextsChoice:
    pairs = [*split.train, *([] if split.separate_evaluation else split.evaluation)]
    return choose(model, [text for text, _ in pairs], [target for _, target in pairs], options.long_texts,
                  split.multi_label, options.class_weight)


def _finish(model: SetFitModel, split: Split, strategy: str, started: float, coverage: float,
            long_texts: LongTextsChoice, cache: EmbeddingCache | None = None) -> TrainedClassifier:
    """Score the trained model and fit its scope. `cache`: the frozen body's embeddings (a head); a
    fine-tuned body embeds its examples here, once for the evaluation and the scope."""
    body_saw_training = cache is None
    cache = {} if cache is None else cache
    policy = long_texts.policy
    evaluation = _evaluate(model, split, coverage, cache, policy)
    scope, scope_index = None, None
    if not split.multi_label:
        train_texts, eval_texts = [text for text, _ in split.train], [text for text, _ in split.evaluation]
        eval_vectors = embed(model, eval_texts, cache, policy) if eval_texts else np.empty((0, 1), dtype=np.float32)
        scope_index, scope = fit_scope(embed(model, train_texts, cache, policy), [target for _, target in split.train],
                                       eval_vectors, [target for _, target in split.evaluation], coverage,
                                       body_saw_training)
    duration = time.perf_counter() - started
    logger.info("%s: trained on %d examples in %.1fs; accuracy %s on %d evaluation examples", strategy,
                len(split.train), duration, evaluation and round(evaluation.accuracy, 4), len(split.evaluation))
    texts = [text for text, _ in split.train]
    every = max(1, len(texts) // MAX_CALIBRATION_TEXTS)  # spread over the examples, not the first labels only
    if split.multi_label:
        thresholds = evaluation.thresholds if evaluation else {label: DEFAULT_THRESHOLD for label in split.labels}
        abstention = None
    else:
        thresholds = None
        abstention = evaluation.abstention if evaluation else untested_abstention(coverage,
                                                                                  split.none_of_these_examples)
    return TrainedClassifier(model=model, labels=split.labels, strategy=strategy, evaluation=evaluation,
                             multi_label=split.multi_label, thresholds=thresholds, abstention=abstention,
                             num_examples=split.num_examples, training_duration_seconds=duration,
                             calibration_texts=texts[::every][:MAX_CALIBRATION_TEXTS], embeddings=cache, scope=scope,
                             scope_index=scope_index, trained_on=list(split.train), long_texts=long_texts)


def train_head(split: Split, options: TrainingOptions, model: SetFitModel | None = None,
               cache: EmbeddingCache | None = None) -> TrainedClassifier:
    """A body as it is — the base model's, or `model`'s (a version's: load_version_body) — and a
    logistic-regression head fitted on its embeddings; those in `cache` (the same body's) are not
    computed again (a retrain of 1,000 examples: seconds)."""
    model = model or _load(split, options)
    logger.info("fitting a head on the frozen body of %s on %s (%d embeddings cached)", options.base_model.requested,
                model.device, len(cache or {}))
    texts = {text for text, _ in [*split.train, *split.evaluation]}
    cache = {text: vector for text, vector in (cache or {}).items() if text in texts}  # deleted texts go
    started = time.perf_counter()
    long_texts = _choose_long_texts(model, split, options)
    # a cached long text may have been read by another policy (the retrained version's)
    cache = {text: vector for text, vector in cache.items() if text not in long_texts.long} | long_texts.embeddings
    vectors = embed(model, [text for text, _ in split.train], cache, long_texts.policy)
    model.model_head.fit(vectors, _targets(split, split.train))
    return _finish(model, split, "head", started, options.abstention_coverage, long_texts, cache)


def fine_tune(split: Split, options: TrainingOptions, progress: ProgressCallback | None = None,
              model: SetFitModel | None = None) -> TrainedClassifier:
    """SetFit: contrastive fine-tuning of the body on pairs of examples, then the head. The base
    model's body, or `model`'s (a version's, fine-tuned further: load_version_body)."""
    model = model or _load(split, options)
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
                                             "label": _targets(split, split.train)}),
            # SetFit's default metric downloads from the Hub; we score the evaluation split ourselves.
            metric=lambda predicted, expected: {"accuracy": float(np.mean(np.asarray(predicted) == expected))},
            callbacks=[
                *([_ReportProgress(progress)] if progress else []),
                *([_Deadline(options.max_seconds)] if options.max_seconds else []),
            ] or None,
        )
        trainer.train()
    long_texts = _choose_long_texts(model, split, options)
    if long_texts.policy != TRUNCATE:  # SetFit fitted the head on the texts cut at the window
        train_texts = [text for text, _ in split.train]
        model.model_head.fit(embed(model, train_texts, dict(long_texts.embeddings), long_texts.policy),
                             _targets(split, split.train))
    return _finish(model, split, "setfit", started, options.abstention_coverage, long_texts)


