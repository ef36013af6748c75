"""Training: job records, the queue, and the trainer process that turns a job into a model version.

- `jobs`: job records (SQLite or Redis), their statuses, listing pages, trainers' heartbeats.
- `queue`: the Huey instance and the job store, opened once.
- `tasks`: submitting and cancelling jobs, the training task, and the job lifecycle around it.
- `run`: one job from its record to a registered version, by strategy (setfit, head, auto).
- `training`: SetFit training itself (single- or multi-label), no queue, store or HTTP; `holdout`:
  honest evaluation (the hold-out, accuracy, per-label metrics); `thresholds`: the thresholds a
  version learns on its evaluation examples (per label; abstention) and the metrics measured with them.
- `consumer` (`python -m trainers.consumer`), `heartbeat`, `health` (`python -m trainers.health`),
  `supervisor` (the embedded trainer beside `bentoml serve`), `logs`, `errors` (how a failed job
  explains itself).

May import: `fewshot.settings`, `fewshot.store`, `fewshot.base_models`, `fewshot.metrics`,
`fewshot.serving.labels` and `fewshot.serving.decisions`, the request schema
`fewshot.api.schemas.TrainRequest` a job carries, and the ML stack (lazily, in `tasks`: the gateway
imports it to submit jobs). `jobs`, `holdout` and `thresholds` know nothing of HTTP; the API builds
its views from them (contracts in pyproject.toml).
"""
