"""In-process references for the serving benchmark: the model alone, no HTTP, no queueing.

    python -m bench.reference MODEL_NAME TEXTS_FILE GROUP_SIZES OUT_JSON   (MODEL_PATH set)

For each group size g (texts waiting at once), random groups of g texts are length-sorted and
split into sub-batches; the best sub-batch size's texts/s is the limit a server could reach with
g texts in flight. Also the median latency of one single-text call.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time

from fewshot.settings import apply_process_environment, get_settings

SECONDS_PER_MEASUREMENT = 3.0
SUB_BATCH_SIZES = (8, 16, 32, 64)
SINGLE_TEXT_CALLS = 60


def throughput(run, texts: list[str], group: int, sub_batch: int, rng: random.Random) -> float:
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < SECONDS_PER_MEASUREMENT:
        batch = sorted(rng.sample(texts, group), key=len)
        for i in range(0, group, sub_batch):
            run(batch[i:i + sub_batch])
        done += group
    return done / (time.perf_counter() - started)


def measure(run, texts: list[str], groups: list[int]) -> dict:
    rng = random.Random(0)
    run(texts[:8])  # warm up
    single = []
    for text in rng.sample(texts, SINGLE_TEXT_CALLS):
        started = time.perf_counter()
        run([text])
        single.append((time.perf_counter() - started) * 1000)
    limits = {}
    for group in groups:
        candidates = [s for s in SUB_BATCH_SIZES if s < group] + [group] if group > 1 else [1]
        per_size = {size: round(throughput(run, texts, group, size, rng), 2) for size in candidates}
        best = max(per_size, key=per_size.get)
        limits[str(group)] = {"texts_per_s": per_size[best], "best_sub_batch": best, "by_sub_batch": per_size}
    return {"single_text_p50_ms": round(statistics.median(single), 2), "limits": limits}


def main() -> None:
    model_name, texts_file, groups, out = sys.argv[1:5]
    apply_process_environment(get_settings())
    import torch

    from fewshot import store
    from fewshot.serving.model_loading import InferenceRuntime, LoadedModel

    runtime = InferenceRuntime.resolve()
    model = LoadedModel.load(store.latest(model_name), runtime).model  # same weights and dtype as served

    def predict(batch: list[str]) -> None:  # the SetFit model itself: one forward pass per call
        with torch.inference_mode():
            model.predict_proba(batch, batch_size=len(batch), as_numpy=True)

    def embed(batch: list[str]) -> None:
        with torch.inference_mode():
            model.model_body.encode(batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False)

    with open(texts_file) as handle:
        texts = json.load(handle)
    group_sizes = [int(g) for g in groups.split(",")]
    result = {
        "device": runtime.device,
        "device_name": torch.cuda.get_device_name(0) if runtime.device.startswith("cuda") else "CPU",
        "dtype": str(runtime.dtype).removeprefix("torch."),
        "predict": measure(predict, texts, group_sizes),
        "embeddings": measure(embed, texts, group_sizes),
    }
    with open(out, "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
