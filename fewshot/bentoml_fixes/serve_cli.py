"""A plain `bentoml serve` in the project directory runs with our store and configuration.yaml.

Upstream: BentoML 1.4.40's CLI reads BENTOML_HOME and BENTOML_CONFIG before it imports the
service, and offers no way for a service to name its runtime configuration file. Not reported
upstream that we found.
"""

from __future__ import annotations

import os
import sys

from fewshot.settings import Settings, bentoml_environment


def reexec_with_bentoml_environment(settings: Settings) -> None:
    """Make the `bentoml serve` CLI process itself use the store under MODEL_PATH and our
    configuration.yaml, so that a plain `bentoml serve` in the project directory runs as designed.

    The CLI resolves BentoML's home (and puts its metrics scratch files there) and loads its
    runtime configuration (metrics prefix, access logs, workers) before it imports service.py, so
    setting the variables from here is too late for that one process. When either was not set as
    needed, restart the same command once with both set; the workers and the trainer inherit them.
    An explicit BENTOML_CONFIG wins over the bundled file.
    """
    wanted = bentoml_environment(settings)
    if all(os.environ.get(name) == value for name, value in wanted.items()):
        return
    command = sys.orig_argv
    is_serve_cli = "serve" in command and any(
        part.endswith(("/bentoml", "bentoml/__main__.py")) or part in {"bentoml", "bentoml.__main__"}
        for part in command[:3]
    )
    if is_serve_cli:
        os.environ.update(wanted)
        os.execv(sys.executable, [sys.executable, *command[1:]])
