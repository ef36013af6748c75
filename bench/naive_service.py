"""Reference for the serving benchmark: one forward pass per request, no cross-request batching.

Same HTTP stack and model as the real service; only the batching differs.
    MODEL_PATH=… bentoml serve bench.naive_service:Naive --port N
"""

from __future__ import annotations

import bentoml

from fewshot import store
from fewshot.settings import apply_process_environment, get_settings

apply_process_environment(get_settings())


@bentoml.service(name="naive", workers=1)
class Naive:
    def __init__(self) -> None:
        from fewshot.inference import LoadedModel, pick_device

        self.device = pick_device()
        self.loader = LoadedModel.load
        self.models: dict = {}

    def _model(self, name: str):
        if name not in self.models:
            self.models[name] = self.loader(store.latest(name), self.device)
        return self.models[name]

    @bentoml.api(route="/v1/predict")
    def predict(self, model_name: str, texts: list[str]) -> dict:
        from fewshot.classifier import best_labels

        loaded = self._model(model_name)
        labels, scores = best_labels(loaded.predict_proba(texts), loaded.column_labels)
        return {"predictions": [{"text": t, "label": label, "score": s}
                                for t, label, s in zip(texts, labels, scores, strict=True)]}

    @bentoml.api(route="/v1/embeddings")
    def embeddings(self, model_name: str, texts: list[str]) -> dict:
        return {"embeddings": self._model(model_name).embed(texts).tolist()}
