"""Where the BentoML model store keeps its files.

Upstream: BentoML 1.4.40 has no public API for the model store's directory; `fewshot.store` needs
it to list version directories (a half-written copy has no model.yaml yet) and to lock writers.
"""

from __future__ import annotations

from pathlib import Path


def model_store_directory() -> Path:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store.get()._path)
