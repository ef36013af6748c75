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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from fewshot.serving.batching import plan_sub_batches

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


class Refused(Exception):
    """The body or head does something this path does not reproduce; the message says what."""


@dataclass(frozen=True)
class Encoded:
    """Token ids of a list of texts, unpadded, with their lengths (what plans the passes)."""

    ids: list[list[int]]
    lengths: np.ndarray


def _modules(body: Any) -> list[Any]:
    return [body[index] for index in range(len(body))]


def _tanh_or_identity(activation: Any) -> Callable[[np.ndarray], np.ndarray]:
    kind = type(activation).__name__
    if kind == "Identity":
        return lambda rows: rows
    if kind == "Tanh":
        return np.tanh
    raise Refused(f"a Dense module with activation {kind} (reproduced: Identity, Tanh)")


@dataclass(frozen=True)
class Dense:
    weight: np.ndarray  # out × in
    bias: np.ndarray | None
    activation: Callable[[np.ndarray], np.ndarray]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        out = rows @ self.weight.T
        if self.bias is not None:
            out += self.bias
        return self.activation(out)


def _dense(module: Any) -> Dense:
    if getattr(module, "use_residual", False):
        raise Refused("a Dense module with a residual connection")
    if (module.module_input_name, module.module_output_name or module.module_input_name) != \
            ("sentence_embedding", "sentence_embedding"):
        raise Refused("a Dense module on other features than the sentence embedding")
    bias = module.linear.bias
    return Dense(module.linear.weight.detach().float().numpy().copy(),
                 None if bias is None else bias.detach().float().numpy().copy(),
                 _tanh_or_identity(module.activation_function))


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


class NumpyHead:
    """SetFit's head as SetFitModel.predict_proba applies it, with numpy in and out."""

    def __init__(self, head: Any) -> None:
        if type(head).__name__ == "SetFitHead":
            self._linear = Dense(head.linear.weight.detach().float().numpy().copy(),
                                 None if head.linear.bias is None else head.linear.bias.detach().float().numpy().copy(),
                                 lambda rows: rows)
            self._scale = 1.0 / (head.temperature + head.eps)
            self._multitarget = bool(head.multitarget)
            self._sklearn = None
        elif hasattr(head, "predict_proba"):
            self._sklearn = head  # scikit-learn: a matrix product and a softmax, already numpy
        else:
            raise Refused(f"a head of type {type(head).__name__}")

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        if self._sklearn is not None:
            probabilities = self._sklearn.predict_proba(embeddings)
            return np.stack(probabilities, axis=1) if isinstance(probabilities, list) else probabilities
        logits = self._linear(embeddings) * self._scale
        if self._multitarget:
            return 1.0 / (1.0 + np.exp(-logits))
        logits -= logits.max(axis=1, keepdims=True)
        exponentials = np.exp(logits)
        return exponentials / exponentials.sum(axis=1, keepdims=True)


class NumpyPipeline:
    """Texts → embeddings → probabilities for one loaded version whose body runs in `runner`."""

    def __init__(self, tokenizer: Tokenizer, runner: Runner, input_names: Sequence[str], pad_id: int,
                 pooling_modes: Sequence[str], after_pooling: Sequence[Callable[[np.ndarray], np.ndarray]],
                 lower_case: bool, head: NumpyHead | None, normalize_for_head: bool, max_batch_tokens: int) -> None:
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
        after: list[Callable[[np.ndarray], np.ndarray]] = []
        for kind, module in zip(kinds[2:], modules[2:], strict=True):
            if kind == "Dense":
                after.append(_dense(module))
            elif kind == "Normalize":
                after.append(normalized)
            else:
                raise Refused(f"a {kind} module after pooling (reproduced: Dense, Normalize)")
        head = NumpyHead(model.model_head) if model.model_head is not None else None
        return cls(tokenizer, runner, input_names, processor.pad_token_id or 0, modes, after,
                   bool(getattr(transformer, "do_lower_case", False)), head,
                   bool(getattr(model, "normalize_embeddings", False)), max_batch_tokens)

    def encode_ids(self, texts: Sequence[str]) -> Encoded:
        if self._lower_case:
            texts = [text.lower() for text in texts]
        ids = [encoding.ids for encoding in self._encode_batch(list(texts))]
        return Encoded(ids, np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return self.encode_ids(texts).lengths.tolist()

    def embed(self, texts: Sequence[str], encoded: Encoded | None = None, one_pass: bool = False) -> np.ndarray:
        """The body's sentence embeddings (what sentence-transformers' `encode` returns), float32; in
        length-sorted passes of at most max_batch_tokens padded tokens, or in one pass."""
        encoded = encoded or self.encode_ids(texts)
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        passes = [list(range(len(texts)))] if one_pass else \
            plan_sub_batches(encoded.lengths.tolist(), self._max_batch_tokens)
        outputs = [self._forward([encoded.ids[i] for i in positions], encoded.lengths[positions])
                   for positions in passes]
        rows = np.empty((len(texts), outputs[0].shape[1]), dtype=np.float32)
        rows[np.concatenate(passes)] = np.concatenate(outputs)
        return rows

    def predict_proba(self, texts: Sequence[str], one_pass: bool = False) -> np.ndarray:
        if self._head is None:
            raise Refused("the version has no head")
        embeddings = self.embed(texts, one_pass=one_pass)
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
        for step in self._after_pooling:
            rows = step(rows)
        return rows


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
            difference = np.abs(pipeline.predict_proba(group, one_pass=True)
                                - np.asarray(reference_proba(group), dtype=np.float32)).max()
            if difference > PROBABILITY_TOLERANCE:
                return (f"probabilities differ by {difference:.2e} > {PROBABILITY_TOLERANCE} on probe text "
                        f"{group[0][:40]!r}")
    return None
