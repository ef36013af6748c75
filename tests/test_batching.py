"""Pure batching logic: length-aware sub-batches, the gateway's call coalescing, the dispatcher's
continuous batching, and the bounded model cache."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from bentoml._internal.marshal import dispatcher

from fewshot.bentoml_fixes.continuous_batching import ContinuousBatchingOptimizer, use_continuous_batching
from fewshot.serving import coalesce
from fewshot.serving.batching import plan_sub_batches
from fewshot.serving.coalesce import Coalescer
from fewshot.serving.model_cache import ModelCache
from fewshot.serving.runtime import CPU_MAX_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS, InferenceRuntime
from fewshot.store import StoredModel

# --- length-aware sub-batches -------------------------------------------------------------------


def test_sub_batches_cover_every_text_once_sorted_by_length() -> None:
    lengths = [30, 5, 12, 5, 80, 7, 12, 30]
    passes = plan_sub_batches(lengths, max_tokens=40)
    flat = [i for p in passes for i in p]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_each_sub_batch_stays_within_the_token_budget() -> None:
    lengths = [3, 9, 14, 14, 20, 21, 40, 64, 2, 2, 2, 2]
    for budget in (16, 32, 64, 100):
        for positions in plan_sub_batches(lengths, budget):
            padded = len(positions) * max(lengths[i] for i in positions)
            assert padded <= budget or len(positions) == 1


def test_a_text_longer_than_the_budget_runs_alone() -> None:
    assert plan_sub_batches([10, 500, 10], max_tokens=64) == [[0, 2], [1]]


def test_short_texts_share_a_pass() -> None:
    assert plan_sub_batches([4] * 10, max_tokens=40) == [list(range(10))]
    assert plan_sub_batches([4] * 10, max_tokens=39) == [list(range(9)), [9]]


def test_no_texts_no_passes_and_budget_must_be_positive() -> None:
    assert plan_sub_batches([], max_tokens=10) == []
    with pytest.raises(ValueError, match="max_tokens"):
        plan_sub_batches([1], max_tokens=0)


# --- runtime choices ----------------------------------------------------------------------------


def test_runtime_auto_choices_follow_the_device() -> None:
    cpu = InferenceRuntime.resolve(device="cpu")
    assert (cpu.dtype, cpu.max_batch_tokens) == ("float32", CPU_MAX_BATCH_TOKENS)
    gpu = InferenceRuntime.resolve(device="cuda")
    assert (gpu.dtype, gpu.max_batch_tokens) == ("float16", GPU_MAX_BATCH_TOKENS)
    chosen = InferenceRuntime.resolve("BFLOAT16", 2048, device="cuda")
    assert (chosen.dtype, chosen.max_batch_tokens) == ("bfloat16", 2048)


# --- gateway coalescing ---------------------------------------------------------------------------


class RecordingBackend:
    """Stands in for the inference client: echoes items, records each call, finishes on demand."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        await self.release.wait()
        return [item.upper() for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def with_one_call_in_flight(max_items: int) -> tuple[RecordingBackend, Coalescer, asyncio.Task]:
    """A coalescer whose first call (["a"]) is in flight and held until `backend.release` is set."""
    backend = RecordingBackend()
    coalescer = Coalescer(backend, max_items=max_items)
    first = asyncio.create_task(coalescer(["a"]))
    await settle()
    return backend, coalescer, first


def test_a_lone_request_goes_out_at_once() -> None:
    async def scenario() -> None:
        backend = RecordingBackend()
        backend.release.set()
        coalescer = Coalescer(backend, max_items=8)
        assert await coalescer(["a", "b"]) == ["A", "B"]
        assert backend.calls == [["a", "b"]]

    asyncio.run(scenario())


def test_requests_arriving_during_a_call_share_the_next_call_in_order() -> None:
    async def scenario() -> None:
        backend, coalescer, first = await with_one_call_in_flight(max_items=8)
        waiting = [asyncio.create_task(coalescer([f"{i}x", f"{i}y"])) for i in range(3)]
        await settle()
        assert backend.calls == [["a"]]  # one call in flight; the others wait for it
        backend.release.set()
        results = await asyncio.gather(first, *waiting)
        assert backend.calls == [["a"], ["0x", "0y", "1x", "1y", "2x", "2y"]]
        assert results == [["A"], ["0X", "0Y"], ["1X", "1Y"], ["2X", "2Y"]]

    asyncio.run(scenario())


def test_calls_hold_whole_requests_up_to_max_cost() -> None:
    """Cut by cost (the gateway's estimated tokens), as by items: whole requests, oldest first, and one
    over the cost alone."""
    async def scenario() -> None:
        backend = RecordingBackend()
        coalescer = Coalescer(backend, max_items=64, cost=len, max_cost=100)
        first = asyncio.create_task(coalescer(["a"]))
        await settle()
        rest = [asyncio.create_task(coalescer(items)) for items in (["x" * 90], ["b", "c"], ["y" * 150], ["d"])]
        await settle()
        backend.release.set()
        await asyncio.gather(first, *rest)
        # 90 + 2 fit 100; 150 goes alone (over the cost on its own); "d" would take it past 100
        assert backend.calls == [["a"], ["x" * 90, "b", "c"], ["y" * 150], ["d"]]

    asyncio.run(scenario())


def test_calls_hold_whole_requests_up_to_max_items() -> None:
    async def scenario() -> None:
        backend, coalescer, first = await with_one_call_in_flight(max_items=4)
        rest = [asyncio.create_task(coalescer(items)) for items in (["b", "c"], ["d", "e"], ["f"] * 6)]
        await settle()
        backend.release.set()
        await asyncio.gather(first, *rest)
        assert [len(call) for call in backend.calls] == [1, 4, 6]  # an oversized request goes alone

    asyncio.run(scenario())


def test_a_failed_call_fails_every_request_in_it_and_the_next_call_still_runs() -> None:
    async def scenario() -> None:
        calls: list[list[str]] = []

        async def flaky(items: list[str]) -> list[str]:
            calls.append(items)
            await asyncio.sleep(0.01)
            if len(calls) == 1:
                raise ConnectionError("inference went away")
            return items

        coalescer = Coalescer(flaky, max_items=8)
        first = asyncio.create_task(coalescer(["a"]))
        await settle()
        second = asyncio.create_task(coalescer(["b"]))
        with pytest.raises(ConnectionError):
            await first
        assert await second == ["b"]

    asyncio.run(scenario())


def test_a_wrong_number_of_results_is_an_error_not_a_misrouted_answer() -> None:
    async def scenario() -> None:
        async def short(items: list[str]) -> list[str]:
            return items[:-1]

        with pytest.raises(RuntimeError, match="results"):
            await Coalescer(short, max_items=8)(["a", "b"])

    asyncio.run(scenario())


def test_a_cancelled_request_is_dropped_before_its_call() -> None:
    async def scenario() -> None:
        backend, coalescer, first = await with_one_call_in_flight(max_items=8)
        gone = asyncio.create_task(coalescer(["gone"]))
        kept = asyncio.create_task(coalescer(["kept"]))
        await settle()
        gone.cancel()
        await settle()
        backend.release.set()
        assert await kept == ["KEPT"]
        await first
        assert backend.calls == [["a"], ["kept"]]

    asyncio.run(scenario())


def test_requests_that_waited_too_long_are_shed_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]  # the coalescer's clock, moved by the test alone: a stalled process sheds nothing extra
    monkeypatch.setattr(coalesce, "time", SimpleNamespace(monotonic=lambda: now[0]))

    async def scenario() -> None:
        backend = RecordingBackend()
        coalescer = Coalescer(backend, max_items=8, max_wait_seconds=0.05,
                              waited_too_long=lambda: TimeoutError("shed"))
        first = asyncio.create_task(coalescer(["a"]))
        await settle()
        late = asyncio.create_task(coalescer(["late"]))
        await settle()
        now[0] += 0.1  # longer than it may wait, with the first call still in flight
        fresh = asyncio.create_task(coalescer(["fresh"]))
        await settle()
        backend.release.set()
        assert await first == ["A"]
        with pytest.raises(TimeoutError, match="shed"):
            await late
        assert await fresh == ["FRESH"]
        assert backend.calls == [["a"], ["fresh"]]  # the shed request was never computed

    asyncio.run(scenario())


# --- BentoML dispatcher ---------------------------------------------------------------------------


def test_dispatcher_never_learns_to_hold_batches_back() -> None:
    optimizer = ContinuousBatchingOptimizer(max_latency=60.0)
    for _ in range(60):  # requests that waited 0.5 s behind busy batches
        optimizer.log_outbound(n=32, wait=0.5, duration=0.2)
    optimizer.trigger_refresh()
    assert optimizer.wait == 0
    assert optimizer.o_a > 0  # the cost model BentoML uses for its overload check is still learned
    # BentoML's own optimizer, fed the same history, would now hold every batch back ~0.5 s:
    (stock,) = ContinuousBatchingOptimizer.__bases__
    original = stock(60.0)
    for _ in range(60):
        original.log_outbound(n=32, wait=0.5, duration=0.2)
    original.trigger_refresh()
    assert original.wait == pytest.approx(0.5)


def test_dispatchers_built_after_the_switch_use_it() -> None:
    saved = dispatcher.Optimizer
    try:
        use_continuous_batching()
        cork = dispatcher.CorkDispatcher(max_latency_in_ms=1000, max_batch_size=8, fallback=lambda: None)
        assert isinstance(cork.optimizer, ContinuousBatchingOptimizer)
    finally:
        dispatcher.Optimizer = saved


# --- bounded model cache ----------------------------------------------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.versions: dict[str, str] = {}
        """The latest version of each model."""
        self.older: dict[str, set[str]] = {}

    def latest(self, reference: str) -> StoredModel | None:
        name, _, pinned = reference.partition(":")
        version = self.versions.get(name)
        if pinned and pinned != version:
            version = pinned if pinned in self.older.get(name, set()) else None
        return StoredModel(name, version, Path("/nowhere"), {"labels": []}) if version else None


class CountingLoader:
    def __init__(self, seconds: float = 0.0) -> None:
        self.loads: list[str] = []
        self.lock = threading.Lock()
        self.seconds = seconds
        """How long a load takes: long enough for concurrent requests to overlap with it."""

    def __call__(self, stored: StoredModel) -> StoredModel:  # the "loaded model" is the entry itself
        with self.lock:
            self.loads.append(stored.tag)
        time.sleep(self.seconds)
        return stored


def make_cache(max_models: int, load_seconds: float = 0.0) -> tuple[ModelCache, FakeStore, CountingLoader]:
    fake, loader = FakeStore(), CountingLoader(load_seconds)
    cache = ModelCache(loader, refresh_seconds=3600, max_models=max_models, resolve=fake.latest)
    return cache, fake, loader


def test_cache_unloads_the_least_recently_used_model_beyond_its_bound() -> None:
    cache, fake, loader = make_cache(max_models=2)
    fake.versions = {"a": "1", "b": "1", "c": "1"}
    cache.get("a")
    cache.get("b")
    cache.get("a")  # a is now more recent than b
    cache.get("c")
    assert cache.loaded_names() == ["a", "c"]
    cache.get("b")  # loads again, evicting a
    assert cache.loaded_names() == ["c", "b"]
    assert loader.loads == ["a:1", "b:1", "c:1", "b:1"]
    cache.stop()


def test_unknown_model_is_none_and_nothing_is_loaded() -> None:
    cache, _, loader = make_cache(max_models=2)
    assert cache.get("missing") is None
    assert loader.loads == []
    cache.stop()


def test_cold_model_loads_once_under_concurrency() -> None:
    cache, fake, loader = make_cache(max_models=4, load_seconds=0.05)  # every asker arrives during the load
    fake.versions = {"a": "1"}
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        cache.get("a")

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loader.loads == ["a:1"]
    cache.stop()


def test_refresh_swaps_new_versions_and_drops_deleted_models() -> None:
    cache, fake, loader = make_cache(max_models=4)
    fake.versions = {"a": "1", "b": "1"}
    cache.get("a")
    cache.get("b")
    fake.versions = {"a": "2"}
    cache.refresh()
    assert cache.get("a").version == "2"
    assert cache.loaded_names() == ["a"]
    assert loader.loads == ["a:1", "b:1", "a:2"]
    cache.stop()


def test_pinned_versions_stay_while_the_name_follows_the_latest_and_deletion_drops_them() -> None:
    cache, fake, loader = make_cache(max_models=4)
    fake.versions, fake.older = {"a": "1"}, {"a": set()}
    assert cache.get("a").version == "1"
    assert cache.get("a:1").version == "1"  # the same version: shared, not loaded again
    fake.versions, fake.older = {"a": "2"}, {"a": {"1"}}
    cache.refresh()
    assert cache.get("a").version == "2" and cache.get("a:1").version == "1"
    assert cache.get("a:9") is None
    assert loader.loads == ["a:1", "a:2"]
    fake.older = {"a": set()}  # version 1 deleted
    cache.refresh({"a"})
    assert cache.loaded_names() == ["a"]
    fake.versions = {}  # every version deleted
    cache.refresh({"b"})  # another model's refresh leaves a alone
    assert cache.loaded_names() == ["a"]
    cache.refresh({"a"})
    assert cache.loaded_names() == [] and cache.get("a") is None
    cache.stop()


def test_top_labels_are_the_most_probable_first_and_cut_at_k() -> None:
    import numpy as np

    from fewshot.serving.labels import top_labels

    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert top_labels(probabilities, ["x", "y", "z"], 2) == [[("y", 0.6), ("z", 0.3)], [("x", 0.5), ("z", 0.3)]]
    assert top_labels(probabilities, ["x", "y", "z"], 5)[0] == [("y", 0.6), ("z", 0.3), ("x", 0.1)]
    assert top_labels(probabilities, ["x", "y", "z"], 0) == [[], []]


def test_embeddings_cross_the_internal_hop_as_float32_bytes_with_their_exact_values() -> None:
    import pickle

    import numpy as np
    from pydantic import TypeAdapter

    from fewshot.serving.items import ItemEmbedding

    vectors = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    sent = [ItemEmbedding(vector=row.tobytes()) for row in vectors]
    wire = TypeAdapter(list[ItemEmbedding])
    by_pickle = wire.validate_python(pickle.loads(pickle.dumps(wire.dump_python(sent), protocol=5)))  # BentoML's hop
    by_json = wire.validate_json(wire.dump_json(sent))  # base64, should a client ever ask in JSON
    for received in (by_pickle, by_json):
        assert [item.floats() for item in received] == vectors.tolist()
    assert ItemEmbedding(found=False).floats() == []
