"""Every workaround for BentoML 1.4.40 and Starlette, in one place to review on an upgrade.

Each module names what it works around and the upstream issue where there is one:

- `serve_cli`: a plain `bentoml serve` re-executed once with our store and configuration.yaml.
- `continuous_batching`: the adaptive-batching dispatcher never waits on purpose (bentoml#3630).
- `dependency_clients`: the gateway's clients to its dependency services keep their sessions and
  our timeout, and resend an idempotent call dropped by a restarting worker (bentoml#4971, #5540).
- `readiness`: /readyz asks the dependency services with a deadline.
- `worker_logging`: our loggers in BentoML's workers; rejected requests logged without tracebacks.
- `openapi_document`: /docs.json describes what the service really answers (bentoml#4232).
- `own_pages`: our docs page at `/` (BentoML's has a Google Tag Manager script) and the console.
- `error_shape`: every 4xx/5xx body rewritten into our one error shape (bentoml#4232).
- `json_only`: POST bodies other than JSON are a 415, not a parser's 500.
- `allow_header`: a 405's Allow lists every method of the path.
- `direct_dispatch`: the serving routes straight to their handlers, past BentoML's per-request dispatch.
- `job_gauges`: the job-status gauges set just before BentoML serves /metrics.
- `store_directory`: the model store's directory, which BentoML has no public API for.

`install()` applies the process-wide ones, once, from service.py, after checking that the
installed BentoML is the version they were written for. The per-call ones (`dependency_clients`,
`readiness`) are used where the gateway makes those calls. May import: `fewshot.api` (the error
shape, the middleware plumbing), `fewshot.pages`, `fewshot.settings`, BentoML's and Starlette's
internals. Never torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from fewshot.settings import Settings

WRITTEN_FOR_BENTOML = "1.4.40"


class UntestedBentoML(RuntimeError):
    """The installed BentoML is not the version these workarounds were written and tested for."""


def check_bentoml_version(installed: str | None = None) -> None:
    installed = installed or metadata.version("bentoml")
    if installed != WRITTEN_FOR_BENTOML:
        raise UntestedBentoML(
            f"bentoml {installed} is installed, but fewshot's BentoML workarounds (fewshot/bentoml_fixes/) "
            f"were written for bentoml=={WRITTEN_FOR_BENTOML}, and some reach into its internals: install "
            f"bentoml=={WRITTEN_FOR_BENTOML} (requirements.txt), or review every module of "
            "fewshot/bentoml_fixes/ against the new version and then raise WRITTEN_FOR_BENTOML")


def install(gateway: Any, app: Any, settings: Settings, job_counts: Callable[[], Mapping[str, int]]) -> None:
    """Apply every process-wide workaround to this process and to `gateway` (the HTTP-facing
    service, `app` its mounted FastAPI routes). Called once, at the end of service.py, in the CLI
    process and in every worker (each imports service.py)."""
    from fewshot.bentoml_fixes.allow_header import AllowHeaderMiddleware
    from fewshot.bentoml_fixes.continuous_batching import use_continuous_batching
    from fewshot.bentoml_fixes.direct_dispatch import DirectDispatchMiddleware, direct_routes
    from fewshot.bentoml_fixes.error_shape import ErrorShapeMiddleware
    from fewshot.bentoml_fixes.job_gauges import JobGaugesMiddleware
    from fewshot.bentoml_fixes.json_only import JSONBodyOnlyMiddleware
    from fewshot.bentoml_fixes.openapi_document import (
        OpenAPIDocumentMiddleware,
        correct_document,
        declared_alternative_bodies,
        declared_operations,
    )
    from fewshot.bentoml_fixes.own_pages import OwnPagesMiddleware
    from fewshot.bentoml_fixes.serve_cli import reexec_with_bentoml_environment
    from fewshot.bentoml_fixes.worker_logging import use_bentoml_log_handlers
    from fewshot.pages import pages_app

    check_bentoml_version()
    reexec_with_bentoml_environment(settings)  # returns only when no re-exec was needed
    use_continuous_batching()  # before the inference worker builds its dispatchers
    use_bentoml_log_handlers(settings.log_level)
    # Starlette runs middlewares in the order added, outermost first: these run behind the API-key
    # check, which service.py adds before calling this.
    gateway.add_asgi_middleware(JobGaugesMiddleware, counts=job_counts)
    gateway.add_asgi_middleware(OpenAPIDocumentMiddleware, build=lambda: correct_document(
        gateway.openapi_spec.asdict(), declared_operations(gateway), declared_alternative_bodies(gateway)))
    gateway.add_asgi_middleware(JSONBodyOnlyMiddleware, paths=[method.route for method in gateway.apis.values()])
    gateway.add_asgi_middleware(ErrorShapeMiddleware)
    gateway.add_asgi_middleware(OwnPagesMiddleware, pages=pages_app())  # its 404 and 405 in our error shape
    gateway.add_asgi_middleware(AllowHeaderMiddleware, paths=lambda: {  # FastAPI's routes and BentoML's (POST)
        **app.openapi()["paths"], **{method.route: ["post"] for method in gateway.apis.values()}})
    gateway.add_asgi_middleware(DirectDispatchMiddleware, routes=direct_routes(gateway))  # innermost of ours
