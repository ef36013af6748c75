"""fewshot: few-shot text classification as a service. The rooms of this package:

- `api/`: the HTTP contract (schemas, the one error shape, auth, views). No torch.
- `serving/`: the inference engine (model loading and cache, batching, labels). No HTTP.
- `records/`: what every process shares, below both `api/` and trainers/: job records, example
  sets, the prediction log, the embedding cache, evaluation/promotion/scope outcomes.
- `pages/`: what a browser opens: the API docs at `/` (and `/docs`) and the console at `/console` (static files).
- `bentoml_fixes/`: every workaround for BentoML 1.4.40 and Starlette, applied by `install()`.
- shared: `store.py` (the BentoML model store), `settings.py` (every setting), `base_models.py`
  (where a base model comes from), `metrics.py` (Prometheus), `timestamps.py` (time as written
  everywhere), `client.py` (the Python client).

The services are wired in service.py; training and the queue live in trainers/, which imports
fewshot (never the other way).
The allowed imports between them are contracts in pyproject.toml, checked by `lint-imports`.
"""

__version__ = "0.1.0"
