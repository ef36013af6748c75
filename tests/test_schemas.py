"""Request validation: every rule names its field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from fewshot.api.errors import describe_validation_errors
from fewshot.api.inference_schemas import PredictRequest
from fewshot.api.schemas import MODEL_NAME_RULE, MODEL_REFERENCE_RULE, is_valid_model_name
from fewshot.api.training_schemas import TrainRequest

TWO_LABELS = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]


def error_message(model: type, payload: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    return describe_validation_errors(caught.value.errors(include_context=False, include_input=False))


@pytest.mark.parametrize("name", ["a", "intents", "bank-77.v2_x", "0", "a" * 63])
def test_valid_model_names(name: str) -> None:
    assert is_valid_model_name(name)


@pytest.mark.parametrize("name", ["", "A", "Bank", "-a", "a-", "a.", "_a", "a b", "../x", "/etc", "a/b",
                                  "a%2Fb", "a" * 64, "é", "a:b"])
def test_invalid_model_names_are_rejected_not_lowercased(name: str) -> None:
    assert not is_valid_model_name(name)
    assert error_message(TrainRequest, {"model_name": name, "examples": TWO_LABELS}) == f"model_name: {MODEL_NAME_RULE}"
    if ":" not in name:  # as a reference, "a:b" is model a's version b
        assert error_message(PredictRequest, {"model_name": name, "texts": ["t"]}) == \
            f"model_name: {MODEL_REFERENCE_RULE}"


@pytest.mark.parametrize("reference", ["a", "a:b", "intents:kxuzb4xj7ouzqax4", "a:latest", f"{'a' * 63}:{'b' * 63}"])
def test_predict_accepts_a_name_or_name_version(reference: str) -> None:
    assert PredictRequest.model_validate({"model_name": reference, "texts": ["t"]}).model_name == reference


@pytest.mark.parametrize("reference", ["a:", ":b", "a:B", "a:b:c", "a:-b", f"a:{'b' * 64}", "a :b"])
def test_invalid_references_name_the_rule(reference: str) -> None:
    assert error_message(PredictRequest, {"model_name": reference, "texts": ["t"]}) == \
        f"model_name: {MODEL_REFERENCE_RULE}"


def test_top_k_is_optional_and_bounded() -> None:
    assert PredictRequest.model_validate({"model_name": "m", "texts": ["t"]}).top_k is None
    assert error_message(PredictRequest, {"model_name": "m", "texts": ["t"], "top_k": 0}).startswith("top_k: ")


def test_train_defaults() -> None:
    request = TrainRequest.model_validate({"model_name": "m", "examples": TWO_LABELS})
    assert (request.base_model, request.num_iterations, request.learning_rate, request.batch_size) == (
        None, 20, 2e-5, 16)
    assert request.holdout_fraction is None


@pytest.mark.parametrize(("payload", "expected"), [
    ({"examples": []}, "examples: must not be empty: send labelled examples, or `labels`"),
    ({}, "examples: must not be empty"),
    ({"labels": ["only"]}, "labels: List should have at least 2 items"),
    ({"examples": [{"text": "a", "label": "x"}]}, "examples: must contain at least 2 distinct labels"),
    ({"examples": [{"text": " ", "label": "x"}, {"text": "b", "label": "y"}]},
     "examples[0].text: must not be empty or only whitespace"),
    ({"examples": [{"text": "a", "label": ""}, {"text": "b", "label": "y"}]},
     "examples[0].label: must not be empty or only whitespace"),
    ({"examples": TWO_LABELS, "num_iterations": 0}, "num_iterations: Input should be greater than 0"),
    ({"examples": TWO_LABELS, "learning_rate": 0}, "learning_rate: Input should be greater than 0"),
    ({"examples": TWO_LABELS, "batch_size": -2}, "batch_size: Input should be greater than 0"),
    ({"examples": TWO_LABELS, "holdout_fraction": 1}, "holdout_fraction: Input should be less than 1"),
    ({"examples": TWO_LABELS, "holdout_fraction": 0.2},
     "holdout_fraction: needs at least 2 examples of every label when > 0"),
])
def test_train_rules_name_their_field(payload: dict, expected: str) -> None:
    assert error_message(TrainRequest, {"model_name": "m", **payload}).startswith(expected)


def test_holdout_zero_is_allowed_with_few_examples() -> None:
    assert TrainRequest.model_validate({"model_name": "m", "examples": TWO_LABELS, "holdout_fraction": 0})


def test_predict_rules() -> None:
    assert error_message(PredictRequest, {"model_name": "m", "texts": []}).startswith("texts: List should")
    assert error_message(PredictRequest, {"model_name": "m", "texts": ["ok", ""]}).startswith("texts[1]: must not")
    assert error_message(PredictRequest, {"texts": ["ok"]}) == "model_name: Field required"


def test_request_limits_name_the_field_and_the_limit() -> None:
    """Defaults of the MAX_* settings (docs/settings.md); each error says which field and which bound."""
    too_many_texts = {"model_name": "m", "texts": ["x"] * 257}
    assert error_message(PredictRequest, too_many_texts) == \
        "texts: List should have at most 256 items after validation, not 257"
    # without MAX_TEXT_CHARS, each version's own limit follows its window (fewshot/serving/long_texts.py);
    # before a version is known, a ceiling
    assert error_message(PredictRequest, {"model_name": "m", "texts": ["ok", "x" * 1_000_001]}) == \
        "texts[1]: String should have at most 1000000 characters"
    assert PredictRequest.model_validate({"model_name": "m", "texts": ["x" * 40_000]}).texts[0] == "x" * 40_000
    many_labels = [{"text": "t", "label": f"l{i}"} for i in range(501)]
    assert error_message(TrainRequest, {"model_name": "m", "examples": many_labels}) == \
        "examples: must contain at most 500 distinct labels (MAX_LABELS), not 501"
    assert error_message(TrainRequest, {"model_name": "m", "examples": TWO_LABELS * 5001}).startswith(
        "examples: List should have at most 10000 items")
    assert error_message(TrainRequest, {"model_name": "m", "examples": TWO_LABELS, "num_iterations": 201}) == \
        "num_iterations: Input should be less than or equal to 200"
    assert error_message(TrainRequest, {"model_name": "m", "examples": TWO_LABELS, "batch_size": 257}) == \
        "batch_size: Input should be less than or equal to 256"
    long_example = [{"text": "x" * 1_000_001, "label": "a"}, {"text": "b", "label": "c"}]
    assert error_message(TrainRequest, {"model_name": "m", "examples": long_example}) == \
        "examples[0].text: String should have at most 1000000 characters"


def test_strategy_and_evaluation_examples_rules() -> None:
    assert TrainRequest.model_validate({"model_name": "m", "examples": TWO_LABELS}).strategy == "setfit"
    assert error_message(TrainRequest, {"model_name": "m", "examples": TWO_LABELS, "strategy": "fast"}).startswith(
        "strategy: Input should be 'setfit', 'head' or 'auto'")
    known = TrainRequest.model_validate({"model_name": "m", "examples": TWO_LABELS,
                                         "eval_examples": [{"text": "c", "label": "x"}]})
    assert known.eval_examples[0].label == "x"
    assert error_message(TrainRequest, {"model_name": "m", "examples": TWO_LABELS,
                                        "eval_examples": [{"text": "c", "label": "z"}]}) == (
        "eval_examples: labels must be among the training examples' labels; unknown: z")
    assert error_message(TrainRequest, {"model_name": "m", "examples": TWO_LABELS, "eval_examples": []}).startswith(
        "eval_examples: List should have at least 1 item")


def test_max_text_chars_limits_texts_not_the_base_model() -> None:
    """MAX_TEXT_CHARS (read at import) bounds texts and labels; a Hub id or a path is not a text."""
    script = """
from fewshot.api.inference_schemas import PredictRequest
from fewshot.api.training_schemas import TrainRequest
from pydantic import ValidationError
TrainRequest.model_validate({"model_name": "m", "base_model": "sentence-transformers/all-MiniLM-L6-v2",
                             "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]})
try:
    PredictRequest.model_validate({"model_name": "m", "texts": ["x" * 21]})
except ValidationError:
    print("text refused")
"""
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "MAX_TEXT_CHARS": "20"},
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "text refused"


def test_numbers_are_numbers_not_booleans_or_strings() -> None:
    """The fuzz test sent `batch_size: true` and `holdout_fraction: false`, taken as 1 and 0.0."""
    for field, value in (("batch_size", True), ("holdout_fraction", False), ("num_iterations", "3"),
                         ("learning_rate", "0.1"), ("abstention_coverage", True)):
        message = error_message(TrainRequest, {"model_name": "m", "examples": TWO_LABELS, field: value})
        assert message.startswith(f"{field}:"), message
    assert TrainRequest.model_validate({"model_name": "m", "examples": TWO_LABELS, "holdout_fraction": 0,
                                        "learning_rate": 1}).holdout_fraction == 0.0  # an int is a number
