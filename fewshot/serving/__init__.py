"""The inference engine: which models are loaded, how a batch of texts from many requests runs on
them, and how their outputs become labels and vectors. No HTTP.

- `items`: the inference service's interface (one item per text; plain pydantic).
- `coalesce`: the gateway's side, merging concurrent requests into one call of that interface.
- `batching`: a batch cut by model, then into length-aware forward passes.
- `runtime`: device, dtype and token budget (`InferenceRuntime`).
- `model_loading`: a stored version loaded and run (from its export and saved numpy path with no
  torch where it can: `numpy_pipeline`, `backends`; else through `torch_loading`, which `exporting`
  serves).
- `model_cache`: the loaded versions, kept current with the store, least recently used unloaded.
- `engine`: a batch of items in, results in batch order out.
- `long_texts`: what a version reads of a text longer than its window, and the text limit it follows
  (the trainer embeds with the same plan).
- `labels`: probability columns back to the user's label strings (the trainer scores with it too).
- `decisions`: probabilities to answers: the best label, a multi-label set over learned thresholds,
  or an abstention (the trainer scores with the same rules).

May import: `fewshot.store`, `fewshot.settings`, torch, SetFit, numpy (torch and SetFit only in
`torch_loading`, `exporting` and what they import when first needed). Never `fewshot.api`,
FastAPI or Starlette (enforced by the import contracts in pyproject.toml). `items`, `coalesce`,
`batching` and this file import nothing heavy: the gateway uses them without loading torch.
"""
