"""Train a classifier, wait for it with progress, then predict (latest and pinned version, top-k), explain
an answer, list versions and jobs, and embed: the README's Python walkthrough.

    python examples/quickstart.py [http://localhost:8000]      (API_KEY in the environment if set)
"""

from __future__ import annotations

import os
import sys

from fewshot.api.job_schemas import JobView
from fewshot.client import FewshotClient, JobFailed

EXAMPLES = [
    {"text": "My card has not arrived yet", "label": "card_arrival"},
    {"text": "When will my new card get here?", "label": "card_arrival"},
    {"text": "I ordered a card two weeks ago and nothing came", "label": "card_arrival"},
    {"text": "Is my card in the post yet?", "label": "card_arrival"},
    {"text": "My top up failed", "label": "top_up_failed"},
    {"text": "Why was my top-up declined?", "label": "top_up_failed"},
    {"text": "I tried to add money but it did not go through", "label": "top_up_failed"},
    {"text": "The app rejected my top up", "label": "top_up_failed"},
]


def show(job: JobView) -> None:
    steps = f" step {job.step}/{job.total_steps}" if job.total_steps else ""
    print(f"job {job.status}{steps}", flush=True)


def main(url: str) -> None:
    with FewshotClient(url, api_key=os.environ.get("API_KEY")) as client:
        job = client.train("intents", EXAMPLES, base_model="sentence-transformers/all-MiniLM-L6-v2", num_iterations=2)
        try:
            client.wait(job.job_id, on_progress=show)
        except JobFailed as failed:
            sys.exit(f"training failed: {failed.job.error}")
        model = client.model("intents")
        print(f"model: {model.model_name}:{model.model_version}, labels {model.labels}, accuracy {model.accuracy}")
        prediction = client.predict("intents", ["where is my card?"]).predictions[0]
        print(f"predict: {prediction.label} ({prediction.score:.2f})")
        # Pin the version just trained, and ask for the two most probable labels.
        pinned = client.predict(f"intents:{model.model_version}", ["where is my card?"], top_k=2).predictions[0]
        print("top 2:", ", ".join(f"{score.label} {score.score:.2f}" for score in pinned.scores))
        why = client.explain("intents", ["where is my card?"]).explanations[0]
        print(f"why: {max(why.spans, key=lambda span: span.weight).text!r}, nearest {why.nearest[0].text!r}")
        versions = next(m.versions for m in client.models().models if m.model_name == "intents")
        statuses = [job.status for job in client.jobs(model_name="intents").jobs]
        print(f"versions of intents: {len(versions)}, its jobs newest first: {statuses}")
        vectors = client.embeddings("intents", ["where is my card?"]).embeddings
        print("embedding dimensions:", len(vectors[0]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8000")
