"""The serving path of an exported body (ONNX Runtime, OpenVINO): Rust tokenizer → the runtime →
pooling, Dense, normalisation and the head in numpy. No sentence-transformers, transformers or
torch code runs per batch (an import contract in pyproject.toml keeps torch out of this module).

Why: with an exported body, sentence-transformers' path costs more than the network on short texts
(profile of the inference worker, MiniLM on OpenVINO, per text: ~100 µs in its tokenisation, half
of it transformers building torch tensors from nested lists, ~35 µs in a length pre-pass that
tokenised every text again, ~50 µs of transformers' Python around the forward pass). Here each text
is tokenised once (`tokenizers`, Rust, in one `encode_batch` call); its length plans the passes;
each pass's ids and mask are filled in numpy at once.

What it reproduces is read from the body's own modules, and anything else is refused (`Refused`,
the caller serves the version through sentence-transformers and says why in its `backend`):
a Transformer module (feature extraction, text only, no prompt), Pooling (cls, mean, max,
mean_sqrt_len_tokens, lasttoken; right padding), Dense (no residual; identity or tanh), Normalize;
SetFit's `normalize_embeddings`; the head: scikit-learn's (its own `predict_proba`, already numpy)
or SetFit's torch head (a linear layer, temperature, softmax or sigmoid) as numpy arrays. And what
it reproduces is checked: at load, `matches` compares it with the sentence-transformers path on
probe texts (long, padded, empty, non-Latin, and the version's own) before it serves.

A pipeline that passed that check is saved beside the export (`save`: the tokenizer, the pooling,
Dense weights and the head, in files that load without running code: JSON and numpy arrays
without pickle), and later loads of the version (a restart, another worker) read it back (`load`)
with no torch, SetFit or sentence-transformers at all: an inference worker whose versions are all
exported never imports them (fewshot/serving/model_loading.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from fewshot.serving.batching import plan_sub_batches
from fewshot.serving.long_texts import TRUNCATE, LongTextReader

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]
"""Feeds by input name (int64 arrays: texts × tokens) → last hidden state (texts × tokens × width)."""

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "lasttoken")
PROBE_TEXTS = (
    "",
    "  leading and trailing spaces  ",
    "Ünïcödé, emoji 🙂 and 中文 text",
    "card payment declined " * 200,  # longer than any model's limit: truncation
    "a",
)
EMBEDDING_COSINE = 0.99999
PROBABILITY_TOLERANCE = 1e-5
"""Float32 exports: both paths run the same runtime, so only summation order differs."""
SAVED_DIRECTORY = "numpy-pipeline"
"""Beside the export it was checked with (MODEL_PATH/backends/<name>/<version>/<variant>/)."""
SAVED_FORMAT = 1
"""Raised when what `save` writes changes: a saved pipeline of another format is not read (the
version loads through sentence-transformers, is checked again and saved anew)."""
ACTIVATIONS = ("identity", "tanh")
HEAD_OUTPUTS = ("softmax", "sigmoid", "binary")


class Refused(Exception):
    """The body or head does something this path does not reproduce; the message says what."""


@dataclass(frozen=True)
class Encoded:
    """Token ids of a list of texts, unpadded, with their lengths (what plans the passes) and
    whether the tokenizer cut them at the body's window."""

    ids: list[list[int]]
    lengths: np.ndarray
    truncated: np.ndarray | None = None


@dataclass(frozen=True)
class Read:
    """A list of texts as the body read them: embeddings, and per text the tokens read (special
    tokens included) and whether any were left out (fewshot/serving/long_texts.py)."""

    vectors: np.ndarray
    tokens: list[int]
    truncated: list[bool]


def _modules(body: Any) -> list[Any]:
    return [body[index] for index in range(len(body))]


def _activation_name(activation: Any) -> str:
    kind = type(activation).__name__
    if kind.lower() not in ACTIVATIONS:
        raise Refused(f"a Dense module with activation {kind} (reproduced: Identity, Tanh)")
    return kind.lower()


def _array(tensor: Any) -> np.ndarray:
    return tensor.detach().float().numpy().copy()


@dataclass(frozen=True)
class Dense:
    weight: np.ndarray  # out × in
    bias: np.ndarray | None
    activation: str = "identity"

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        out = rows @ self.weight.T
        if self.bias is not None:
            out += self.bias
        return np.tanh(out) if self.activation == "tanh" else out


def _dense(module: Any) -> Dense:
    if getattr(module, "use_residual", False):
        raise Refused("a Dense module with a residual connection")
    if (module.module_input_name, module.module_output_name or module.module_input_name) != \
            ("sentence_embedding", "sentence_embedding"):
        raise Refused("a Dense module on other features than the sentence embedding")
    bias = module.linear.bias
    return Dense(_array(module.linear.weight), None if bias is None else _array(bias),
                 _activation_name(module.activation_function))


def normalized(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (torch.nn.functional.normalize: norms clamped at 1e-12)."""
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def pool(hidden: np.ndarray, mask: np.ndarray, lengths: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """sentence-transformers' Pooling on right-padded passes: one vector per text, modes concatenated
    in the order the module lists them."""
    vectors = []
    for mode in modes:
        if mode == "cls":
            vectors.append(hidden[:, 0])
        elif mode == "max":
            vectors.append(np.where(mask[:, :, None], hidden, -np.inf).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            summed = np.einsum("tld,tl->td", hidden, mask.astype(hidden.dtype))
            counts = np.maximum(lengths.astype(hidden.dtype), 1e-9)[:, None]
            vectors.append(summed / (counts if mode == "mean" else np.sqrt(counts)))
        elif mode == "lasttoken":
            vectors.append(hidden[np.arange(len(hidden)), np.maximum(lengths - 1, 0)])
        else:
            raise Refused(f"pooling mode {mode}")
    return vectors[0] if len(vectors) == 1 else np.concatenate(vectors, axis=1)


@dataclass(frozen=True)
class NumpyHead:
    """SetFit's head as SetFitModel.predict_proba applies it, with numpy in and out: a linear layer
    (`weight` classes × width, `bias`, `scale`) and what turns its logits into probabilities:
    `softmax`, `sigmoid` per column (multi-label), or `binary` (one logit: [1 - p, p]).

    Reproduced: SetFit's torch head (temperature, softmax or sigmoid), scikit-learn's
    LogisticRegression (softmax over classes; one sigmoid logit for two, as scikit-learn 1.9 does)
    and a OneVsRestClassifier of them (multi-label: a sigmoid per label). Another scikit-learn
    estimator runs as itself (`sklearn`: its own `predict_proba`, already numpy), and such a head is
    not saved (`NumpyPipeline.save`): its one safe format, skops, imports torch (its trusted types
    come from scikit-learn's estimator discovery, which imports array_api_compat's torch module)."""

    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    scale: float = 1.0
    output: str = "softmax"
    classes_: np.ndarray | None = None
    """The columns' classes of a scikit-learn head (its `classes_`); None for SetFit's (by index)."""
    sklearn: Any = None

    @classmethod
    def of(cls, head: Any) -> NumpyHead:
        kind = type(head).__name__
        if kind == "SetFitHead":
            bias = head.linear.bias
            return cls(_array(head.linear.weight), None if bias is None else _array(bias),
                       1.0 / (head.temperature + head.eps), "sigmoid" if head.multitarget else "softmax")
        if kind == "LogisticRegression" and hasattr(head, "coef_"):
            return cls(np.asarray(head.coef_, dtype=np.float64), np.asarray(head.intercept_, dtype=np.float64),
                       output="binary" if len(head.classes_) <= 2 else "softmax", classes_=head.classes_)
        estimators = getattr(head, "estimators_", None)
        if kind == "OneVsRestClassifier" and estimators and all(
                type(estimator).__name__ == "LogisticRegression" and len(estimator.classes_) == 2
                for estimator in estimators) and head.label_binarizer_.y_type_.startswith("multilabel"):
            return cls(np.concatenate([estimator.coef_ for estimator in estimators]).astype(np.float64),
                       np.concatenate([estimator.intercept_ for estimator in estimators]).astype(np.float64),
                       output="sigmoid", classes_=head.classes_)
        if hasattr(head, "predict_proba"):
            return cls(sklearn=head, classes_=getattr(head, "classes_", None))
        raise Refused(f"a head of type {kind}")

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        if self.sklearn is not None:
            probabilities = self.sklearn.predict_proba(embeddings)
            return np.stack(probabilities, axis=1) if isinstance(probabilities, list) else probabilities
        assert self.weight is not None
        logits = embeddings.astype(self.weight.dtype, copy=False) @ self.weight.T
        if self.bias is not None:
            logits += self.bias
        logits *= self.scale
        if self.output == "binary":
            positive = 1.0 / (1.0 + np.exp(-logits[:, :1]))
            return np.concatenate([1.0 - positive, positive], axis=1)
        if self.output == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        logits -= logits.max(axis=1, keepdims=True)
        exponentials = np.exp(logits)
        return exponentials / exponentials.sum(axis=1, keepdims=True)


class NumpyPipeline:
    """Texts → embeddings → probabilities for one loaded version whose body runs in `runner`."""

    def __init__(self, tokenizer: Tokenizer, runner: Runner, input_names: Sequence[str], pad_id: int,
                 pooling_modes: Sequence[str], after_pooling: Sequence[Dense | None],
                 lower_case: bool, head: NumpyHead | None, normalize_for_head: bool, max_batch_tokens: int) -> None:
        """`after_pooling`: the body's modules after Pooling in order, a Dense or None for Normalize."""
        self._tokenizer = tokenizer
        self._runner = runner
        self._input_names = tuple(input_names)
        self._pad_id = pad_id
        self._pooling_modes = tuple(pooling_modes)
        self._after_pooling = tuple(after_pooling)
        self._lower_case = lower_case
        self._head = head
        self._normalize_for_head = normalize_for_head
        self._max_batch_tokens = max_batch_tokens
        # tokenizers >= 0.20: encode_batch_fast skips the character offsets we never read.
        self._encode_batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        truncation = tokenizer.truncation
        self.window: int | None = truncation["max_length"] if truncation else None
        """Tokens per text in one forward pass (the body's max_seq_length); None: no limit."""
        self._long_texts: LongTextReader | None = None

    def read_long_texts(self, policy: str) -> None:
        """Read texts longer than the window by `policy` (a version's `long_texts`); truncate until told."""
        self._long_texts = None if policy == TRUNCATE or self.window is None else \
            LongTextReader(self._tokenizer, self.window, policy, self._lower_case)

    @classmethod
    def for_model(cls, model: Any, runner: Runner, input_names: Sequence[str], max_batch_tokens: int) -> NumpyPipeline:
        """The pipeline of a SetFitModel whose body's transformer was replaced by an export (`runner`);
        Refused when its modules or head are not all reproducible here."""
        body = model.model_body
        modules = _modules(body)
        kinds = [type(module).__name__ for module in modules]
        if not kinds or kinds[0] != "Transformer":
            raise Refused(f"the body starts with {kinds[0] if kinds else 'nothing'}, not a Transformer")
        transformer = modules[0]
        if getattr(transformer, "transformer_task", "feature-extraction") != "feature-extraction":
            raise Refused(f"a Transformer module for {transformer.transformer_task}")
        if getattr(body, "default_prompt_name", None) or getattr(body, "truncate_dim", None):
            raise Refused("a default prompt or a truncated embedding dimension")
        processor = getattr(transformer, "processor", None) or getattr(transformer, "tokenizer", None)
        backend_tokenizer = getattr(processor, "backend_tokenizer", None)
        if not isinstance(backend_tokenizer, Tokenizer):
            raise Refused("the body's tokenizer is not a fast (Rust) tokenizer")
        if processor.padding_side != "right":
            raise Refused("a tokenizer that pads on the left")
        tokenizer = Tokenizer.from_str(backend_tokenizer.to_str())  # a copy: the body's keeps its settings
        tokenizer.no_padding()
        if body.max_seq_length:
            tokenizer.enable_truncation(max_length=body.max_seq_length, strategy="longest_first")
        else:
            tokenizer.no_truncation()
        if len(modules) < 2 or kinds[1] != "Pooling":
            raise Refused("no Pooling module after the Transformer")
        modes = (modules[1].pooling_mode,) if isinstance(modules[1].pooling_mode, str) else modules[1].pooling_mode
        if unknown := [mode for mode in modes if mode not in POOLING_MODES]:
            raise Refused(f"pooling mode {', '.join(unknown)} (reproduced: {', '.join(POOLING_MODES)})")
        after: list[Dense | None] = []
        for kind, module in zip(kinds[2:], modules[2:], strict=True):
            if kind == "Dense":
                after.append(_dense(module))
            elif kind == "Normalize":
                after.append(None)
            else:
                raise Refused(f"a {kind} module after pooling (reproduced: Dense, Normalize)")
        head = NumpyHead.of(model.model_head) if model.model_head is not None else None
        return cls(tokenizer, runner, input_names, processor.pad_token_id or 0, modes, after,
                   bool(getattr(transformer, "do_lower_case", False)), head,
                   bool(getattr(model, "normalize_embeddings", False)), max_batch_tokens)

    @property
    def head(self) -> NumpyHead | None:
        return self._head

    def encode_ids(self, texts: Sequence[str]) -> Encoded:
        if self._lower_case:
            texts = [text.lower() for text in texts]
        encodings = self._encode_batch(list(texts))
        ids = [encoding.ids for encoding in encodings]
        truncated = np.fromiter((bool(encoding.overflowing) for encoding in encodings), dtype=bool,
                                count=len(ids)) if self.window is not None else np.zeros(len(ids), dtype=bool)
        return Encoded(ids, np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), truncated)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return self.encode_ids(texts).lengths.tolist()

    def embed(self, texts: Sequence[str], encoded: Encoded | None = None, one_pass: bool = False) -> np.ndarray:
        """The body's sentence embeddings (what sentence-transformers' `encode` returns), float32; in
        length-sorted passes of at most max_batch_tokens padded tokens, or in one pass."""
        return self._embed_encoded(encoded or self.encode_ids(texts), one_pass)

    def _embed_encoded(self, encoded: Encoded, one_pass: bool = False) -> np.ndarray:
        if not encoded.ids:
            return np.empty((0, 0), dtype=np.float32)
        passes = [list(range(len(encoded.ids)))] if one_pass else \
            plan_sub_batches(encoded.lengths.tolist(), self._max_batch_tokens)
        outputs = [self._forward([encoded.ids[i] for i in positions], encoded.lengths[positions])
                   for positions in passes]
        rows = np.empty((len(encoded.ids), outputs[0].shape[1]), dtype=np.float32)
        rows[np.concatenate(passes)] = np.concatenate(outputs)
        return rows

    def read(self, texts: Sequence[str]) -> Read:
        """`embed`, with the version's long-texts policy: a text the window cuts is read as the
        policy says (its segments embedded in the same passes as the other texts, then pooled)."""
        encoded = self.encode_ids(texts)
        assert encoded.truncated is not None
        long = np.flatnonzero(encoded.truncated)
        if self._long_texts is None or not len(long):
            return Read(self.embed(texts, encoded), encoded.lengths.tolist(), encoded.truncated.tolist())
        short = np.flatnonzero(~encoded.truncated)
        reading = self._long_texts.read([texts[i] for i in long])
        segments = self.encode_ids(reading.segments)
        ids = [encoded.ids[i] for i in short] + segments.ids
        together = Encoded(ids, np.concatenate([encoded.lengths[short], segments.lengths]))
        vectors = self._embed_encoded(together)
        rows = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        rows[short] = vectors[:len(short)]
        rows[long] = reading.pool(vectors[len(short):], renormalize=self.normalizes)
        tokens = encoded.lengths.tolist()
        truncated = encoded.truncated.tolist()
        for position, count, cut in zip(long.tolist(), reading.tokens, reading.truncated, strict=True):
            tokens[position], truncated[position] = count, cut
        return Read(rows, tokens, truncated)

    @property
    def normalizes(self) -> bool:
        """The body's rows are unit vectors (it ends with a Normalize module)."""
        return bool(self._after_pooling) and self._after_pooling[-1] is None

    def predict_proba(self, texts: Sequence[str], one_pass: bool = False) -> np.ndarray:
        return self.probabilities(self.embed(texts, one_pass=one_pass))

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """The head's probabilities of the body's embeddings (`embed`'s output)."""
        if self._head is None:
            raise Refused("the version has no head")
        if self._normalize_for_head:
            embeddings = normalized(embeddings)
        return np.asarray(self._head(embeddings), dtype=np.float32)

    def _forward(self, ids: list[list[int]], lengths: np.ndarray) -> np.ndarray:
        """One pass: ids padded on the right to the pass's longest text, straight into numpy."""
        width = max(int(lengths.max()), 1)
        mask = np.arange(width)[None, :] < lengths[:, None]
        input_ids = np.full(mask.shape, self._pad_id, dtype=np.int64)
        input_ids[mask] = np.fromiter((token for row in ids for token in row), dtype=np.int64,
                                      count=int(lengths.sum()))
        feeds = {"input_ids": input_ids, "attention_mask": mask.astype(np.int64)}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)  # one sequence per text: segment 0
        hidden = self._runner({name: feeds[name] for name in self._input_names})
        rows = pool(hidden.astype(np.float32, copy=False), mask, lengths, self._pooling_modes)
        for dense in self._after_pooling:
            rows = normalized(rows) if dense is None else dense(rows)
        return rows

    def save(self, directory: Path) -> None:
        """Write this pipeline into `directory`, whole or not at all: staged beside it and renamed into
        place. One already there is replaced (it did not open, or is of an older format: the caller
        has just checked this one). Refused for a head that is not saved (`NumpyHead`)."""
        if self._head is not None and self._head.sklearn is not None:
            raise Refused(f"a head of type {type(self._head.sklearn).__name__} is not saved")
        arrays: dict[str, np.ndarray] = {}
        steps: list[dict[str, Any]] = []
        for index, dense in enumerate(self._after_pooling):
            if dense is None:
                steps.append({"kind": "normalize"})
                continue
            arrays[f"dense{index}_weight"] = dense.weight
            if dense.bias is not None:
                arrays[f"dense{index}_bias"] = dense.bias
            steps.append({"kind": "dense", "activation": dense.activation})
        head: dict[str, Any] | None = None
        if self._head is not None:
            arrays["head_weight"] = self._head.weight
            if self._head.bias is not None:
                arrays["head_bias"] = self._head.bias
            if self._head.classes_ is not None:
                arrays["head_classes"] = np.asarray(self._head.classes_)
            head = {"scale": self._head.scale, "output": self._head.output}
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
        replaced = staging.with_name(f"{staging.name}.old")
        try:
            np.savez(staging / "arrays.npz", **arrays)
            (staging / "tokenizer.json").write_text(self._tokenizer.to_str(), encoding="utf8")
            (staging / "pipeline.json").write_text(json.dumps({
                "format": SAVED_FORMAT, "pad_id": self._pad_id, "pooling_modes": list(self._pooling_modes),
                "after_pooling": steps, "lower_case": self._lower_case, "head": head,
                "normalize_for_head": self._normalize_for_head}), encoding="utf8")
            if directory.is_dir():  # a directory is only renamed over an empty one: move the old one away
                os.rename(directory, replaced)
            os.rename(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(replaced, ignore_errors=True)

    @classmethod
    def load(cls, directory: Path, runner: Runner, input_names: Sequence[str], max_batch_tokens: int) -> NumpyPipeline:
        """The pipeline `save` wrote, on the body in `runner`; no code runs from the files (JSON and
        numpy arrays, read without pickle). Refused when there is none, or of another format."""
        try:
            spec = json.loads((directory / "pipeline.json").read_text(encoding="utf8"))
        except (OSError, ValueError) as error:
            raise Refused(f"no saved pipeline ({error})") from error
        if spec.get("format") != SAVED_FORMAT:
            raise Refused(f"a saved pipeline of format {spec.get('format')}, not {SAVED_FORMAT}")
        with np.load(directory / "arrays.npz", allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        after = [None if step["kind"] == "normalize" else
                 Dense(arrays[f"dense{index}_weight"], arrays.get(f"dense{index}_bias"), step["activation"])
                 for index, step in enumerate(spec["after_pooling"])]
        head_spec = spec["head"]
        if head_spec is not None and head_spec["output"] not in HEAD_OUTPUTS:
            raise Refused(f"a saved head with output {head_spec['output']!r}")
        head = None if head_spec is None else NumpyHead(
            arrays["head_weight"], arrays.get("head_bias"), float(head_spec["scale"]), head_spec["output"],
            arrays.get("head_classes"))
        tokenizer = Tokenizer.from_str((directory / "tokenizer.json").read_text(encoding="utf8"))
        return cls(tokenizer, runner, input_names, int(spec["pad_id"]), spec["pooling_modes"], after,
                   bool(spec["lower_case"]), head, bool(spec["normalize_for_head"]), max_batch_tokens)


def mismatch(pipeline: NumpyPipeline, reference_embed: Callable[[list[str]], np.ndarray],
             reference_proba: Callable[[list[str]], np.ndarray] | None, texts: Sequence[str]) -> str | None:
    """Why `pipeline` does not answer as the sentence-transformers path does on `texts` (None: it
    does, to float32 export precision: EMBEDDING_COSINE, PROBABILITY_TOLERANCE): each text alone,
    then all in one pass. Both sides see the very same passes: ONNX Runtime's dynamic int8 scales a
    pass's activations by its own range, so a text's output depends on the texts it runs with."""
    texts = list(texts)
    for group in [*([text] for text in texts), texts]:
        ours = pipeline.embed(group, one_pass=True)
        theirs = np.asarray(reference_embed(group), dtype=np.float32)
        if ours.shape != theirs.shape:
            return f"embeddings of shape {ours.shape}, not {theirs.shape}"
        cosine = (normalized(ours) * normalized(theirs)).sum(axis=1)
        if cosine.min() < EMBEDDING_COSINE:
            worst = group[int(cosine.argmin())]
            return f"embedding cosine {cosine.min():.6f} < {EMBEDDING_COSINE} on probe text {worst[:40]!r}"
        if reference_proba is not None:
            difference = np.abs(pipeline.probabilities(ours)
                                - np.asarray(reference_proba(group), dtype=np.float32)).max()
            if difference > PROBABILITY_TOLERANCE:
                return (f"probabilities differ by {difference:.2e} > {PROBABILITY_TOLERANCE} on probe text "
                        f"{group[0][:40]!r}")
    return None
