"""Reference for the serving benchmark: one forward pass per request, no cross-request batching.

Same HTTP stack, model and dtype as the real service; the model is called directly, once per
request (no batching across requests, no length-aware sub-batches).
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
        from fewshot.serving.model_loading import InferenceRuntime

        self.runtime = InferenceRuntime.resolve()
        self.models: dict = {}

    def _model(self, name: str):
        from fewshot.serving.model_loading import LoadedModel

        if name not in self.models:
            self.models[name] = LoadedModel.load(store.latest(name), self.runtime)
        return self.models[name]

    @bentoml.api(route="/v1/predict")
    def predict(self, model_name: str, texts: list[str]) -> dict:
        import torch

        from fewshot.serving.labels import best_labels

        loaded = self._model(model_name)
        with torch.inference_mode():
            probabilities = loaded.model.predict_proba(texts, batch_size=len(texts), as_numpy=True)
        labels, scores = best_labels(probabilities, loaded.decisions.columns)
        return {"predictions": [{"text": t, "label": label, "score": float(s)}
                                for t, label, s in zip(texts, labels, scores, strict=True)]}

    @bentoml.api(route="/v1/embeddings")
    def embeddings(self, model_name: str, texts: list[str]) -> dict:
        import torch

        model = self._model(model_name).model
        with torch.inference_mode():
            vectors = model.model_body.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                              show_progress_bar=False)
        return {"embeddings": vectors.tolist()}
