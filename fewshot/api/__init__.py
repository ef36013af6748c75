"""The HTTP contract: what the routes take and answer, and how a request is let in.

- `schemas`: every request and response model, with the validation rules and their limits.
- `errors`: the one error shape and every error response (400, 401, 404, 409, 415, 429 …), and
  `responds`, with which each route declares its statuses beside itself.
- `auth`: the API key (X-API-Key or Bearer), checked before anything else.
- `views`: what a job record and a stored model version show over HTTP.
- `asgi`: the plumbing our ASGI middlewares share.

May import: `fewshot.settings`, `fewshot.store`, `fewshot.base_models`, `fewshot.serving.items`,
the shared records (`fewshot.records`), pydantic and Starlette. Never torch,
SetFit or transformers: the gateway serves with this package and must not load the ML stack
(enforced by the import contracts in pyproject.toml and tests/test_layering.py).
"""
