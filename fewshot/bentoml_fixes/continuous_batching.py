"""Continuous batching for BentoML's adaptive batching dispatcher.

BentoML's `CorkDispatcher` holds a batch back while its `Optimizer.wait` says waiting pays, and
it learns `wait` from the waits it observes, which include the time requests sat behind a running
batch. Under sustained load that grows to hundreds of milliseconds and then keeps itself up: the
dispatcher makes later requests wait as long, and records that wait again. Measured on our
service: one 16-text request took 344 ms right after a 64-client load, 97 ms on a fresh server.
(Upstream knows the effect; a fix proposed as a batching "strategy" was never merged, bentoml#3630.)

With `wait` pinned to 0 the dispatcher releases work as soon as the model is free, and whatever
arrived during a forward pass forms the next batch: continuous batching, as TEI and vLLM do.
Batches still grow with load (they hold everything that queued during the previous pass, up to
`max_batch_size`), and a lone request is never held back.
"""

from __future__ import annotations

from bentoml._internal.marshal import dispatcher


class ContinuousBatchingOptimizer(dispatcher.Optimizer):
    """BentoML's optimizer (it still estimates batch cost for its overload check), never waiting."""

    def __init__(self, max_latency: float) -> None:
        super().__init__(max_latency)
        self.wait = 0

    def trigger_refresh(self) -> None:
        super().trigger_refresh()
        self.wait = 0


def use_continuous_batching() -> None:
    """Make dispatchers created from now on in this process use `ContinuousBatchingOptimizer`.

    `CorkDispatcher.__init__` looks `Optimizer` up in its module at construction time, and the
    service's dispatchers are built when its worker starts, after service.py is imported.
    """
    dispatcher.Optimizer = ContinuousBatchingOptimizer
