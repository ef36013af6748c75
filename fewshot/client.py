"""A small typed Python client: train or import → wait (with progress) → predict / explain / embeddings / download.

POST routes go through BentoML's own client (`bentoml.SyncHTTPClient`, which knows the service's
API schema); GET routes through the httpx client it holds. Responses come back as this project's
pydantic models, and every error as `FewshotError` with the status and the server's message.

    from fewshot.client import FewshotClient

    with FewshotClient("http://localhost:8000", api_key=None) as client:
        job = client.train("intents", [{"text": "My card has not arrived", "label": "card_arrival"}, ...])
        client.wait(job.job_id, on_progress=lambda job: print(job.status, job.progress))
        print(client.predict("intents", ["where is my card?"]).predictions[0].label)
"""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import bentoml
import httpx
from bentoml.exceptions import BentoMLException

from fewshot.api.example_schemas import ExampleList, ExamplesAdded, ExamplesDeleted
from fewshot.api.explain_schemas import ExplainResponse
from fewshot.api.inference_schemas import EmbeddingsResponse, PredictResponse
from fewshot.api.job_schemas import JobList, JobView
from fewshot.api.learning_schemas import FeedbackResponse, SuggestResponse, SuspectsResponse
from fewshot.api.model_schemas import ModelList, ModelsDeleted, ModelView
from fewshot.api.training_schemas import TrainAccepted


class FewshotError(Exception):
    """An error answer of the service: `status` (HTTP) and `message` (names the field and the rule)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class JobFailed(FewshotError):
    """The job ended `failed` or `cancelled`; `job` holds its record (the reason is in `job.error` or `job.note`)."""

    def __init__(self, job: JobView) -> None:
        reason = job.error if job.status == "failed" else job.note or "cancelled"
        super().__init__(200, f"training job {job.job_id} {job.status}: {reason}")
        self.job = job


class FewshotClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 300) -> None:
        self._bento = bentoml.SyncHTTPClient(url, token=api_key, timeout=timeout)
        self._http: httpx.Client = self._bento.client

    def __enter__(self) -> FewshotClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._bento.close()

    def train(self, model_name: str, examples: Sequence[dict[str, Any]], **options: Any) -> TrainAccepted:
        """Queue a training job. `examples`: `{"text", "label"}` (label None: none of the labels) or
        `{"text", "labels"}` (multi-label). `options`: base_model, strategy, num_iterations, learning_rate,
        batch_size, holdout_fraction, eval_examples, abstention_coverage."""
        body = {"model_name": model_name, "examples": list(examples), **options}
        return TrainAccepted.model_validate(self._post("train", body))

    def import_model(self, model_name: str, source: str, labels: Sequence[str] | None = None,
                     eval_examples: Sequence[dict[str, str]] | None = None,
                     revision: str | None = None) -> TrainAccepted:
        """Queue an import job for a SetFit model: `source` is a Hugging Face Hub id (`revision`
        optional) or an absolute directory inside the server's LOCAL_MODEL_DIRS. `wait` for it as
        for training."""
        body = {"model_name": model_name, "source": source, "labels": None if labels is None else list(labels),
                "eval_examples": None if eval_examples is None else list(eval_examples), "revision": revision}
        return TrainAccepted.model_validate(self._post("import_model", {k: v for k, v in body.items()
                                                                        if v is not None}))

    def download(self, model_name: str, directory: str | Path = ".", extract: bool = False) -> Path:
        """Save a version (`name` = its latest, or `name:version`) as `<name>-<version>.tar.gz` in
        `directory`; with `extract`, unpack it there too and return the model's directory, which
        `SetFitModel.from_pretrained` loads. Otherwise the archive's path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._http.stream("GET", f"/v1/models/{model_name}/download") as response:
            if response.status_code >= 400:
                raise FewshotError(response.status_code, _error_message(response.read().decode("utf-8", "replace")))
            name = _attachment_name(response.headers.get("content-disposition", "")) or "model.tar.gz"
            archive = directory / Path(name).name  # never a path from the server
            with archive.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        if not extract:
            return archive
        with tarfile.open(archive) as contents:
            contents.extractall(directory, filter="data")  # refuses absolute paths, "..", links out, devices
        return directory / archive.name.removesuffix(".tar.gz")

    def job(self, job_id: str) -> JobView:
        return JobView.model_validate(self._get(f"/v1/jobs/{job_id}"))

    def jobs(self, status: str | None = None, model_name: str | None = None, limit: int = 50,
             cursor: str | None = None) -> JobList:
        """One page of jobs, newest first; pass the page's `next_cursor` as `cursor` for the next."""
        query = {"status": status, "model_name": model_name, "limit": limit, "cursor": cursor}
        return JobList.model_validate(self._get("/v1/jobs", {k: v for k, v in query.items() if v is not None}))

    def cancel(self, job_id: str) -> JobView:
        return JobView.model_validate(self._send("POST", f"/v1/jobs/{job_id}/cancel"))

    def model(self, model_name: str) -> ModelView:
        """The latest version of `model_name`, or the version `name:version` names."""
        return ModelView.model_validate(self._get(f"/v1/models/{model_name}"))

    def models(self) -> ModelList:
        return ModelList.model_validate(self._get("/v1/models"))

    def delete_model(self, model_name: str) -> list[str]:
        """Delete every version of `model_name`, or one (`name:version`); the tags deleted."""
        return ModelsDeleted.model_validate(self._send("DELETE", f"/v1/models/{model_name}")).deleted

    def examples(self, model_name: str, label: str | None = None, limit: int = 100,
                 cursor: str | None = None) -> ExampleList:
        """One page of the model's example set, in the order added; `next_cursor` as `cursor` for the next."""
        query = {"label": label, "limit": limit, "cursor": cursor}
        return ExampleList.model_validate(self._get(f"/v1/models/{model_name}/examples",
                                                    {k: v for k, v in query.items() if v is not None}))

    def add_examples(self, model_name: str, examples: Sequence[dict[str, Any]]) -> ExamplesAdded:
        """Add to the model's example set: what was added, and the duplicates and conflicts not added."""
        return ExamplesAdded.model_validate(self._send("POST", f"/v1/models/{model_name}/examples",
                                                       body={"examples": list(examples)}))

    def delete_examples(self, model_name: str, ids: Sequence[str]) -> ExamplesDeleted:
        return ExamplesDeleted.model_validate(self._send("POST", f"/v1/models/{model_name}/delete-examples",
                                                         body={"ids": list(ids)}))

    def suggest(self, model_name: str, texts: Sequence[str], k: int = 20) -> SuggestResponse:
        """The `k` texts of the pool `texts` worth labelling next, each with the model's guess."""
        return SuggestResponse.model_validate(self._send("POST", f"/v1/models/{model_name}/suggest",
                                                         body={"texts": list(texts), "k": k}))

    def feedback(self, model_name: str, text: str, label: str | None = None,
                 labels: Sequence[str] | None = None) -> FeedbackResponse:
        """The right label of `text` (None: none of the labels; `labels` for a multi-label model) into the set."""
        body: dict[str, Any] = {"text": text, **({"labels": list(labels)} if labels is not None else {"label": label})}
        return FeedbackResponse.model_validate(self._send("POST", f"/v1/models/{model_name}/feedback", body=body))

    def suspects(self, model_name: str, limit: int = 50) -> SuspectsResponse:
        """Examples of the set whose label looks wrong, most suspect first."""
        return SuspectsResponse.model_validate(self._get(f"/v1/models/{model_name}/suspects", {"limit": limit}))

    def retrain(self, model_name: str, strategy: str = "head", **options: Any) -> TrainAccepted:
        """Train the model again on its example set (a job: `wait` for it)."""
        return TrainAccepted.model_validate(self._send("POST", f"/v1/models/{model_name}/retrain",
                                                       body={"strategy": strategy, **options}))

    def wait(self, job_id: str, on_progress: Callable[[JobView], None] | None = None,
             poll_seconds: float = 1.0, timeout: float | None = None) -> JobView:
        """Poll until the job completes; `on_progress` sees every poll. Raises JobFailed (failed or
        cancelled) or TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.status == "completed":
                return job
            if job.status in ("failed", "cancelled"):
                raise JobFailed(job)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"training job {job_id} still {job.status} after {timeout}s")
            time.sleep(poll_seconds)

    def predict(self, model_name: str, texts: Sequence[str], top_k: int | None = None,
                threshold: float | None = None, abstain: bool = False) -> PredictResponse:
        """`model_name` may pin a version (`name:version`); with `top_k` each prediction has `scores`;
        `threshold` and `abstain` as in POST /v1/predict (multi-label thresholds, abstention)."""
        options = {"top_k": top_k, "threshold": threshold, "abstain": abstain or None}
        body = {"model_name": model_name, "texts": list(texts), **{k: v for k, v in options.items() if v is not None}}
        return PredictResponse.model_validate(self._post("predict", body))

    def explain(self, model_name: str, texts: Sequence[str], method: str = "both", granularity: str = "word",
                top_k: int = 3, label: str | None = None, abstain: bool = False,
                threshold: float | None = None) -> ExplainResponse:
        """Why the model answered what it did (POST /v1/explain): each text's answer, the weight of each word
        (or sentence) for the explained label (`method` occlusion), its nearest training examples (neighbors)."""
        options = {"label": label, "threshold": threshold, "abstain": abstain or None}
        body = {"model_name": model_name, "texts": list(texts), "method": method, "granularity": granularity,
                "top_k": top_k, **{k: v for k, v in options.items() if v is not None}}
        return ExplainResponse.model_validate(self._send("POST", "/v1/explain", body=body))

    def embeddings(self, model_name: str, texts: Sequence[str]) -> EmbeddingsResponse:
        body = {"model_name": model_name, "texts": list(texts)}
        return EmbeddingsResponse.model_validate(self._post("embeddings", body))

    def _post(self, endpoint: str, body: dict[str, Any]) -> Any:
        try:
            return self._bento.call(endpoint, body)
        except BentoMLException as error:  # its message is the response body
            raise FewshotError(int(error.error_code), _error_message(str(error))) from None

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._send("GET", path, params)

    def _send(self, method: str, path: str, params: dict[str, Any] | None = None,
              body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, params=params, json=body)
        if response.status_code >= 400:
            raise FewshotError(response.status_code, _error_message(response.text))
        return response.json()


def _attachment_name(disposition: str) -> str | None:
    """The file name of a `Content-Disposition: attachment; filename="..."` header."""
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value:
            return value.strip('"')
    return None


def _error_message(body: str) -> str:
    """The `error` of our error shape, or the body as it is."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body
