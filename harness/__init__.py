"""Real servers and fixture data for the tests (`tests/`) and the benchmarks (`bench/`).

Owns: starting and stopping a real `bentoml serve` of this project (`live_server`), a separate
trainer process, a real `redis-server` (`redis_server`), a Docker engine with the image's base images
and the `docker` / compose command lines (`docker_engine`), and reading the labelled fixture files in
tests/data (`fixtures`). May import: the standard library, httpx, psutil, redis, never the
service's own packages: it drives the service only as a client would, over HTTP and processes.
Not shipped in the bento.
"""
