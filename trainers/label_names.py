"""A model before it has examples: training texts made from its label names (or descriptions).

SetFit's answer to zero-shot classification is the same (`setfit.get_templated_dataset`: "This
sentence is {label}" repeated); a text is in an example set once, so each label gets one text per
template here, not one text eight times. The head then learns where each name's sentences fall in
the body's embedding space: a usable model, which real examples improve through the same set.
Pure Python: the gateway makes them (bench/retraining.py measures how good they are).
"""

from __future__ import annotations

TEMPLATES = (
    "{}",
    "This sentence is {}.",
    "This text is about {}.",
    "A message about {}.",
    "It is about {}.",
    "The topic is {}.",
    "Regarding {}.",
    "Something to do with {}.",
)
"""Eight, as SetFit's default sample size."""


def phrase(name: str, description: str | None) -> str:
    """What the templates say of a label: its description, or its name in words (`card_arrival` → `card arrival`)."""
    return description if description else " ".join(name.replace("_", " ").replace("-", " ").split())


def templated_texts(name: str, description: str | None = None) -> list[str]:
    words = phrase(name, description)
    return list(dict.fromkeys(template.format(words) for template in TEMPLATES))
