"""Our Prometheus metrics, served beside BentoML's own on the gateway's /metrics.

BentoML's workers (and the embedded trainer, their child) share one prometheus_client
multiprocess directory, whose metrics the gateway's /metrics aggregates. prometheus_client picks
single- or multi-process mode when first imported, and BentoML sets PROMETHEUS_MULTIPROC_DIR only
as a worker starts: import this module lazily, inside a running worker or trainer, never at the
top of service.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

TRAINING_JOBS = Gauge(
    "fewshot_training_jobs", "Training jobs by status, read from the job store when /metrics is scraped "
    "(finished ones are kept JOB_RETENTION_DAYS)", ["status"], multiprocess_mode="livemostrecent")
TRAINING_JOBS_FINISHED = Counter(
    "fewshot_training_jobs_finished", "Training jobs finished by this trainer, by outcome", ["outcome"])
TRAINING_DURATION = Histogram(
    "fewshot_training_duration_seconds", "Wall time of completed training jobs (load, fine-tune, save)",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200))
INFERENCE_BATCH_TEXTS = Histogram(
    "fewshot_inference_batch_texts", "Texts per batch of the inference service (all requests and models merged)",
    ["route"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
INFERENCE_TEXTS = Counter(
    "fewshot_inference_texts", "Texts the inference service computed, by route, by what ran the model's body "
    "(torch, onnx, openvino: the backend of the loaded model that answered) and by the path around it (numpy, "
    "sentence-transformers)", ["route", "backend", "pipeline"])
MODEL_LOADS = Counter("fewshot_model_loads", "Model versions loaded by the inference service (cold or newer)")
MODEL_EVICTIONS = Counter("fewshot_model_evictions",
                          "Models unloaded as least recently used beyond MAX_LOADED_MODELS")


def set_job_gauges(counts: Mapping[str, int]) -> None:
    """How many jobs have each status (`fewshot.records.jobs.count_by_status`)."""
    for status, count in counts.items():
        TRAINING_JOBS.labels(status).set(count)
PREDICTION_LOG_DROPPED = Counter(
    "fewshot_prediction_log_dropped", "Sampled predict texts dropped because the prediction log's write queue was "
    "full (PREDICTION_LOG_SAMPLE; the store was slower than the traffic)")
