"""Training: the queue and the trainer process that turns a job into a model version. The job
records, example sets and prediction log it reads and writes are fewshot.records's, shared with the
API (nothing in fewshot/ imports this package).

- `queue`: the Huey instance, opened once (beside the stores of fewshot.records.stores).
- `tasks`: submitting and cancelling jobs, the training task, and the job lifecycle around it.
- `run`: one job from its record to a registered version, by strategy (setfit, head, auto).
- `training`: SetFit training itself (single- or multi-label), no queue, store or HTTP; `holdout`:
  honest evaluation (the hold-out, accuracy, per-label metrics); `thresholds`: the thresholds a
  version learns on its evaluation examples (per label; abstention) and the metrics measured with them;
  `long_texts`: a version's policy for texts longer than the window (`auto` picks it on the examples).
- `consumer` (`python -m trainers.consumer`), `heartbeat`, `health` (`python -m trainers.health`),
  `supervisor` (the embedded trainer beside `bentoml serve`), `logs`, `errors` (how a failed job
  explains itself).

May import: `fewshot.settings`, `fewshot.store`, `fewshot.base_models`, `fewshot.metrics`,
`fewshot.serving.labels`, `fewshot.serving.decisions` and `fewshot.serving.long_texts`, the request schema
`fewshot.api.training_schemas.TrainRequest` a job carries, and the ML stack (lazily, in `tasks`: the gateway
imports it to submit jobs). `holdout` and `thresholds` know nothing of HTTP; the API builds its
views from the records and outcomes of fewshot.records (contracts in pyproject.toml).
"""
