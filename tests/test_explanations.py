"""The explanation maths (fewshot/learning/explanations.py) and the explain route's plan of work
(fewshot/api/explain.py `plan_occlusion`), in-process: spans and their offsets, what a text reads
like without a span, the nearest rows, and the limits a request is held to."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.responses import JSONResponse

from fewshot.api.explain import plan_occlusion
from fewshot.api.explain_schemas import MAX_EXPLAIN_CHARS, ExplainRequest
from fewshot.learning.explanations import (
    Span,
    cosine_similarities,
    heaviest,
    most_similar,
    occlusion_variants,
    occlusion_weights,
    ranks,
    second_round_variants,
    spans_of,
    spans_within,
    without,
)
from fewshot.settings import get_settings

TEXT = "  My card hasn't arrived, why?  It was sent 3 weeks ago.\nHelp!"


def test_words_and_sentences_keep_their_offsets() -> None:
    words = spans_of(TEXT, "word")
    assert [span.of(TEXT) for span in words] == ["My", "card", "hasn't", "arrived", "why", "It", "was", "sent", "3",
                                                  "weeks", "ago", "Help"]
    assert [span.of(TEXT) for span in spans_of(TEXT, "sentence")] == [
        "My card hasn't arrived, why?", "It was sent 3 weeks ago.", "Help!"]
    assert spans_of("?! ...", "word") == [] and spans_of("?! ...", "sentence") == []
    assert [span.of("Ça coûte 5€?") for span in spans_of("Ça coûte 5€?", "word")] == ["Ça", "coûte", "5"]


@pytest.mark.parametrize(("left_out", "expected"), [
    ("hasn't", "My card arrived, why?  It was sent 3 weeks ago.\nHelp!"),
    ("arrived", "My card hasn't, why?  It was sent 3 weeks ago.\nHelp!"),  # no space before the comma
    ("My", "card hasn't arrived, why?  It was sent 3 weeks ago.\nHelp!"),
    ("Help", "My card hasn't arrived, why?  It was sent 3 weeks ago.!"),
])
def test_a_text_without_a_span_reads_as_one_text(left_out: str, expected: str) -> None:
    span = next(span for span in spans_of(TEXT, "word") if span.of(TEXT) == left_out)
    assert without(TEXT, [span]) == expected


def test_a_variant_per_span_and_its_weight_is_the_fall() -> None:
    spans = spans_of("where is my card", "word")
    assert occlusion_variants("where is my card", spans) == ["is my card", "where my card", "where is card",
                                                             "where is my"]
    assert without("card", [Span(0, 4)]) == ""
    assert occlusion_weights(0.9, [0.2, 0.95]) == pytest.approx([0.7, -0.05])


def nearest(query: np.ndarray, points: np.ndarray, k: int) -> list[tuple[int, float]]:
    return most_similar(cosine_similarities(query, points), k)


def test_nearest_rows_by_cosine_best_first() -> None:
    points = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0], [-1.0, 0.0]], dtype=np.float32)
    found = nearest(np.array([1.0, 0.1]), points, 3)
    assert [row for row, _ in found] == [0, 2, 1]
    assert found[0][1] == pytest.approx(1 / np.hypot(1, 0.1), abs=1e-6)
    assert nearest(np.array([1.0, 0.0]), points, 10)[-1][0] == 3  # k above the rows: all of them
    assert nearest(np.array([1.0, 0.0]), np.empty((0, 2)), 3) == []


def test_words_fall_back_to_sentences_above_the_cap_and_sentences_are_capped() -> None:
    assert spans_within("one two three. four five", "word", 5)[0] == "word"
    granularity, spans = spans_within("one two three. four five six", "word", 5)
    assert granularity == "sentence" and len(spans) == 2
    assert spans_within("a. b. c.", "sentence", 2) is None


def test_the_plan_names_the_limit_a_request_is_over() -> None:
    cap = get_settings().max_explain_spans
    over_spans = plan_occlusion(ExplainRequest(model_name="m", texts=["fine", ". ".join(["x"] * (cap + 1))]))
    assert isinstance(over_spans, JSONResponse) and over_spans.status_code == 400
    assert f"texts[1]: it has more than MAX_EXPLAIN_SPANS={cap} sentences".encode() in over_spans.body
    # work: each text once and once per span (less that span); sentences of 1,000 characters
    sentence = "word " * 199 + "end."
    texts = [" ".join([sentence] * (cap // 2))] * 16
    over_work = plan_occlusion(ExplainRequest(model_name="m", texts=texts, granularity="sentence"))
    assert isinstance(over_work, JSONResponse) and f"{MAX_EXPLAIN_CHARS:,}".encode() in over_work.body
    plans = plan_occlusion(ExplainRequest(model_name="m", texts=["where is my card"]))
    assert plans[0].granularity == "word" and len(plans[0].variants) == 4
    assert plan_occlusion(ExplainRequest(model_name="m", texts=texts, method="neighbors"))[0].variants == ()


def test_the_second_round_ranks_by_the_fall_with_the_heaviest_left_out() -> None:
    spans = spans_of("how many people live here", "word")
    weights = [0.01, 0.02, 0.30, 0.0, 0.05]
    top = heaviest(weights)
    assert top == 2 and heaviest([0.1, 0.1]) == 0  # ties: the first
    assert second_round_variants("how many people live here", spans, top) == [
        "many live here", "how live here", "how many here", "how many live"]
    # with "people" left out, leaving out "how" lowers the label most (0.2), though it weighed little alone
    assert ranks(weights, top, [0.2, 0.5, 0.6, 0.4]) == [2, 4, 1, 5, 3]
    assert ranks(weights) == [4, 3, 1, 5, 2]  # one round: by weight
    assert ranks([0.0, 0.0, 0.0], None) == [1, 2, 3]
