"""Train a classifier, wait for it, then predict and embed: the README's Python walkthrough.

    python examples/quickstart.py [http://localhost:8000]      (API_KEY in the environment if set)
"""

from __future__ import annotations

import os
import sys
import time

import bentoml

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


def main(url: str) -> None:
    with bentoml.SyncHTTPClient(url, token=os.environ.get("API_KEY")) as client:
        job = client.train({"model_name": "intents", "base_model": "sentence-transformers/all-MiniLM-L6-v2",
                            "num_iterations": 2, "examples": EXAMPLES})
        # GET routes are plain HTTP: the BentoML client's `.client` is an httpx client for them.
        while (state := client.client.get(f"/v1/jobs/{job['job_id']}").json())["status"] in {"pending", "running"}:
            time.sleep(1)
        if state["status"] != "completed":
            sys.exit(f"training failed: {state['error']}")
        print("model:", client.client.get("/v1/models/intents").json())
        print("predict:", client.predict({"model_name": "intents", "texts": ["where is my card?"]}))
        vectors = client.embeddings({"model_name": "intents", "texts": ["where is my card?"]})["embeddings"]
        print("embedding dimensions:", len(vectors[0]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8000")
