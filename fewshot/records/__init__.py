"""What every process shares, below both the HTTP API (fewshot/api) and the trainers (trainers/):
the job records, the example sets, the prediction log, the embedding cache, and the evaluation,
promotion and scope outcomes they store.

- `jobs`: the job records and their store (SQLite or Redis), and the refusals the gateway answers.
- `examples`: each model's example set and its store.
- `prediction_log`: the sampled predictions kept for suggestions.
- `embedding_cache`: a version's embeddings of its training texts, for its next retrain.
- `outcomes`: the pydantic types of an evaluation, a promotion and a scope, and `fixed_evaluation`.
- `sqlite_file`: the one SQLite file of the embedded mode, whose tables the stores are.
- `stores`: the stores themselves, opened at import.

Nothing here imports `fewshot.api` or `trainers`, nor torch, SetFit, sentence-transformers or
transformers (enforced by the import contracts in pyproject.toml).
"""
