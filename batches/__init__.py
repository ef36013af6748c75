"""Batch jobs over files (OpenAI's Batch API, and plain tables): the batch worker.

A batch is planned (its input file cut into shards of BATCH_SHARD_TEXTS texts), each shard is a Huey
task any batch worker may take (SQLite queue under MODEL_PATH, or Redis: several machines sharing
MODEL_PATH), and the last one assembles the results into files. The worker runs the versions with the
serving engine (fewshot/serving) in its own process, at the lowest CPU priority (SCHED_IDLE): online
requests come first.

- `queue`: the Huey queue of batch tasks, and the stores.
- `inputs`: input files (OpenAI request lines, CSV, JSONL rows, Parquet) → shard files.
- `shards`: one shard computed: each line validated as its route validates it, texts run sorted by
  length, each answered as its route answers it.
- `results`: shard results → the output and error files, in the input's format.
- `tasks`: the tasks (plan, shard, finish), submit and cancel for the gateway, the sweep.
- `consumer`: `python -m batches.consumer`, the worker process.

Imports fewshot (the API's request and answer models, the engine, the records), never trainers'
training code, and fewshot never imports this.
"""
