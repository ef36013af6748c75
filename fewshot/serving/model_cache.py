"""The inference service's loaded models: at most MAX_LOADED_MODELS, kept current with the store."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from fewshot import store
from fewshot.backend_cache import AutoChoice
from fewshot.serving import auto_backend, backends, export_process
from fewshot.serving.backends import BackendChoice
from fewshot.serving.model_loading import InferenceRuntime, LoadedModel

logger = logging.getLogger("fewshot.inference")


class ModelCache:
    """Loaded models by reference (`name`: its latest version, or `name:version`): at most
    `max_models`, kept current with the store.

    Requests never read the store for a cached model: a background thread looks for newer
    versions every `refresh_seconds`, loads them beside the old one and swaps the reference,
    so requests in flight finish on the version they started with; a deleted model or version
    is dropped. Beyond `max_models` the least recently used one is unloaded (a batch still using
    it keeps its reference). Two references to one version share one loaded model.
    """

    def __init__(self, load: Callable[[store.StoredModel], LoadedModel], refresh_seconds: float,
                 max_models: int, resolve: Callable[[str], store.StoredModel | None] = store.resolve,
                 on_evict: Callable[[str], None] | None = None) -> None:
        self._load = load
        self._on_evict = on_evict
        self._resolve = resolve
        self._refresh_seconds = refresh_seconds
        self._max_models = max_models
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # guards _models; never held while loading
        self._load_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._stopped = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_forever, name="model-refresh", daemon=True)
        self._refresher.start()

    def get(self, reference: str) -> LoadedModel | None:
        loaded = self._touch(reference)
        if loaded is not None:
            return loaded
        # One load per cold model, however many batches ask for it at once.
        with self._load_locks[reference]:
            loaded = self._touch(reference)
            if loaded is None:
                stored = self._resolve(reference)
                if stored is None:
                    return None
                loaded = self._loaded_version(stored) or self._load(stored)
                self._put(reference, loaded)
        return loaded

    def loaded_names(self) -> list[str]:
        """References of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)

    def refresh(self, names: set[str] | None = None) -> None:
        """Swap in newer versions of cached models and drop models deleted from the store;
        only the references to models in `names` when given (after a deletion: at once)."""
        with self._lock:
            snapshot = [(reference, loaded) for reference, loaded in self._models.items()
                        if names is None or store.split_reference(reference)[0] in names]
        for reference, current in snapshot:
            stored = self._resolve(reference)
            if stored is None:
                logger.info("model %s left the store; unloading", reference)
                with self._lock:
                    self._models.pop(reference, None)
            elif stored.version != current.version:
                with self._load_locks[reference]:
                    replacement = self._loaded_version(stored) or self._load(stored)
                    with self._lock:
                        if reference in self._models:  # not evicted meanwhile
                            self._models[reference] = replacement
                logger.info("switched %s from version %s to %s", reference, current.version, stored.version)

    def stop(self) -> None:
        self._stopped.set()

    def replace_version(self, loaded: LoadedModel) -> bool:
        """Put `loaded` in place of the same version under every reference that holds it (a version
        whose export finished); False if none does any more (unloaded, or a newer version came)."""
        with self._lock:
            references = [reference for reference, current in self._models.items()
                          if (current.name, current.version) == (loaded.name, loaded.version)]
            for reference in references:
                self._models[reference] = loaded
        return bool(references)

    @classmethod
    def for_runtime(cls, runtime: InferenceRuntime, refresh_seconds: float, max_models: int,
                    on_load: Callable[[str], None] | None = None,
                    on_evict: Callable[[str], None] | None = None) -> ModelCache:
        """A version whose export (INFERENCE_BACKEND onnx/openvino) is not made yet loads with torch and
        serves at once; one background thread has it exported (and its numpy path checked and saved) in a
        process of its own (fewshot/serving/export_process.py: that memory is the OS's again when it ends),
        loads it again from those files and swaps it in. A first request after training thus waits as
        long as with torch (time to a served model, bench/time_to_model.py: ~1 s), not for the export
        (MiniLM, OpenVINO int8: ~12 s). With INFERENCE_BACKEND=AUTO on CPU, that process first times the
        candidates on this machine (fewshot/serving/auto_backend.py), once per body architecture, and the
        thread loads the fastest."""
        exporter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backend-export")

        def runtime_for(stored: store.StoredModel) -> tuple[InferenceRuntime, AutoChoice | None]:
            """The runtime of this version: AUTO's choice for its architecture (torch until timed)."""
            if not runtime.auto:
                return runtime, None
            decision = auto_backend.kept_decision(stored, runtime.threads)
            if decision is None:
                return replace(runtime, backend=backends.PYTORCH), None
            return runtime.serving(BackendChoice.from_variant(decision.chosen)), decision

        def load(stored: store.StoredModel) -> LoadedModel:
            version_runtime, decision = runtime_for(stored)
            loaded = LoadedModel.load(stored, version_runtime, export_missing=False, record=False)
            if runtime.auto and decision is None:
                loaded = loaded.with_backend(requested="auto", exporting=True)
                exporter.submit(time_and_swap, stored)
            elif loaded.backend.exporting:
                exporter.submit(export_and_swap, stored, version_runtime, decision)
            if decision is not None:
                loaded = loaded.with_backend(auto=decision)
            loaded.record_backend(stored)
            if on_load is not None:
                on_load(stored.tag)
            return loaded

        def time_and_swap(stored: store.StoredModel) -> None:
            try:
                decision = auto_backend.kept_decision(stored, runtime.threads)  # timed meanwhile for another version
                if decision is None:
                    decision, _ = export_process.measure_apart(stored, runtime)
                    auto_backend.keep_decision(stored, runtime.threads, decision)
            except Exception as error:  # torch keeps serving it, and the model view says why
                if isinstance(error, export_process.ExportProcessStopped):  # e.g. the server stopping
                    logger.warning("could not time the backends of %s (%s); torch serves it", stored.tag, error)
                else:
                    logger.exception("could not time the backends of %s; torch serves it", stored.tag)
                try:
                    torch_served = LoadedModel.load(stored, replace(runtime, backend=backends.PYTORCH), record=False)
                except Exception:  # the version loaded at first keeps serving; the view must not say `exporting`
                    logger.exception("could not load %s again with torch", stored.tag)
                    current = cache.version(stored.name, stored.version)
                    if current is None:
                        return
                    torch_served = current
                torch_served = torch_served.with_backend(requested="auto", exporting=False,
                                                         error=f"timing the backends failed: {error}")
                if cache.replace_version(torch_served):
                    torch_served.record_backend(stored)
                return
            export_and_swap(stored, runtime.serving(BackendChoice.from_variant(decision.chosen)), decision)

        def export_and_swap(stored: store.StoredModel, version_runtime: InferenceRuntime,
                            decision: AutoChoice | None) -> None:
            try:
                exported = load_exported(stored, version_runtime)
            except export_process.ExportProcessStopped as stopped:  # e.g. the server stopping: nothing to fix
                logger.warning("%s: %s; torch keeps serving it", stored.tag, stopped)
                return
            except Exception:  # the torch version keeps serving
                logger.exception("could not load %s again with its export", stored.tag)
                return
            if decision is not None:
                exported = exported.with_backend(auto=decision)
            if cache.replace_version(exported):
                # only now: the model view never names a backend before it answers
                exported.record_backend(stored)
                logger.info("%s now served with %s", stored.tag, exported.backend.backend)

        def load_exported(stored: store.StoredModel, version_runtime: InferenceRuntime) -> LoadedModel:
            """The version with its export, made in a process of its own if it is not in the cache yet (with
            its numpy path checked and saved there, so the worker opens the files: no SetFit load here)."""
            choice = version_runtime.backend
            if choice != backends.PYTORCH and not backends.is_exported(stored, choice):
                try:
                    serving, _ = export_process.export_apart(stored, version_runtime)
                except export_process.ExportProcessStopped:
                    raise
                except export_process.ExportProcessFailed as failed:  # made here, then, as before
                    logger.warning("%s: %s; exporting it in the inference worker", stored.tag, failed)
                else:
                    if serving.backend == backends.TORCH:  # the export failed: torch, and the view says why
                        torch_runtime = replace(version_runtime, backend=backends.PYTORCH)
                        return LoadedModel.load(stored, torch_runtime, record=False).with_backend(
                            requested=serving.requested, error=serving.error)
                    loaded = LoadedModel.load(stored, version_runtime, record=False)
                    if (loaded.backend.backend, loaded.backend.quantize) == (serving.backend, serving.quantize):
                        # what making it took, there: this load only read it from the cache
                        loaded = loaded.with_backend(prepare_seconds=serving.prepare_seconds)
                    return loaded
            return LoadedModel.load(stored, version_runtime, record=False)

        cache = cls(load, refresh_seconds, max_models, on_evict=on_evict)
        return cache

    def _touch(self, reference: str) -> LoadedModel | None:
        with self._lock:
            loaded = self._models.get(reference)
            if loaded is not None:
                self._models.move_to_end(reference)
            return loaded

    def _loaded_version(self, stored: store.StoredModel) -> LoadedModel | None:
        """That version, if another reference already loaded it (`intents` and `intents:<latest>`)."""
        return self.version(stored.name, stored.version)

    def version(self, name: str, version: str) -> LoadedModel | None:
        """The loaded `name:version` under any reference, or None."""
        with self._lock:
            return next((loaded for loaded in self._models.values()
                         if (loaded.name, loaded.version) == (name, version)), None)

    def _put(self, reference: str, loaded: LoadedModel) -> None:
        with self._lock:
            self._models[reference] = loaded
            self._models.move_to_end(reference)
            while len(self._models) > self._max_models:
                evicted, _ = self._models.popitem(last=False)
                logger.info("unloaded %s: least recently used of more than %d loaded models",
                            evicted, self._max_models)
                if self._on_evict is not None:
                    self._on_evict(evicted)

    def _refresh_forever(self) -> None:
        while not self._stopped.wait(self._refresh_seconds):
            try:
                self.refresh()
            except Exception:  # keep serving the cached versions; try again next round
                logger.exception("model refresh failed")
