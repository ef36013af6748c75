"""A SetFit classification head on disk without pickle, and read back without running code.

SetFit saves its head with joblib (`model_head.pkl`): a pickle, and loading a pickle runs whatever
code the file names. Every version this service writes carries its head a second time, in a format
whose loader only builds types it trusts:
- a scikit-learn head (SetFit's default logistic regression, or any estimator): skops
  (`model_head.skops`), scikit-learn's community format; its loader refuses any type outside
  scikit-learn and numpy unless told to trust it, and we never tell it to;
- SetFit's differentiable (torch) head: its weights in safetensors and its constructor arguments in
  JSON (`model_head.safetensors`, `model_head_config.json`).
`model_head.pkl` stays beside them, so that a downloaded version loads with plain
`SetFitModel.from_pretrained`; an import reads the safe copy and never the pickle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PICKLED_HEAD_FILE = "model_head.pkl"  # SetFit's own (setfit.modeling.MODEL_HEAD_NAME)
SKOPS_HEAD_FILE = "model_head.skops"
TORCH_HEAD_WEIGHTS_FILE = "model_head.safetensors"
TORCH_HEAD_CONFIG_FILE = "model_head_config.json"
SAFE_HEAD_FILES = (SKOPS_HEAD_FILE, TORCH_HEAD_WEIGHTS_FILE, TORCH_HEAD_CONFIG_FILE)
# SetFitHead's constructor arguments, as its attributes of the same names hold them.
TORCH_HEAD_ARGUMENTS = ("in_features", "out_features", "temperature", "eps", "bias", "multitarget")


class UnsafeHead(Exception):
    """The head's file asks for types that its safe loader does not build (its message says which)."""


def has_safe_head(directory: Path) -> bool:
    return (directory / SKOPS_HEAD_FILE).is_file() or (
        (directory / TORCH_HEAD_WEIGHTS_FILE).is_file() and (directory / TORCH_HEAD_CONFIG_FILE).is_file())


def save_safe_head(head: Any, directory: Path) -> None:
    """Write `head` beside SetFit's pickle in the format its kind allows."""
    from setfit.modeling import SetFitHead

    if isinstance(head, SetFitHead):
        from safetensors.torch import save_file

        config = {name: getattr(head, name) for name in TORCH_HEAD_ARGUMENTS}
        (directory / TORCH_HEAD_CONFIG_FILE).write_text(json.dumps(config), encoding="utf8")
        save_file({key: value.detach().cpu().contiguous() for key, value in head.state_dict().items()},
                  str(directory / TORCH_HEAD_WEIGHTS_FILE))
        return
    import skops.io

    skops.io.dump(head, directory / SKOPS_HEAD_FILE)


def load_safe_head(directory: Path, device: str = "cpu") -> Any:
    """The head saved by `save_safe_head`, built without unpickling anything.

    Raises UnsafeHead when the skops file holds types outside scikit-learn and numpy (skops'
    default trusted set): a file crafted to run code cannot get past this.
    """
    skops_file = directory / SKOPS_HEAD_FILE
    if skops_file.is_file():
        import skops.io

        untrusted = skops.io.get_untrusted_types(file=skops_file)
        if untrusted:
            raise UnsafeHead(f"{SKOPS_HEAD_FILE} asks for types that are not loaded without trusting them: "
                             f"{', '.join(untrusted[:10])}")
        return skops.io.load(skops_file)
    from safetensors.torch import load_file
    from setfit.modeling import SetFitHead

    config = json.loads((directory / TORCH_HEAD_CONFIG_FILE).read_text(encoding="utf8"))
    unknown = sorted(set(config) - set(TORCH_HEAD_ARGUMENTS))
    if unknown:
        raise UnsafeHead(f"{TORCH_HEAD_CONFIG_FILE} has unknown entries: {', '.join(unknown)}")
    head = SetFitHead(**config, device=device)
    head.load_state_dict(load_file(str(directory / TORCH_HEAD_WEIGHTS_FILE), device=device))
    return head


def add_safe_heads_to_old_versions() -> list[str]:
    """Versions registered before heads were saved twice get their safe copy, from their own pickle
    (which this service wrote): their downloads then import without TRUST_PICKLED_HEADS too.
    Runs at trainer start; idempotent."""
    import joblib

    from fewshot import store

    added = []
    for listed in store.all_models().values():
        for stored in listed:
            pickled = stored.path / PICKLED_HEAD_FILE
            if has_safe_head(stored.path) or not pickled.is_file():
                continue
            with store.writing():
                if stored.path.is_dir() and not has_safe_head(stored.path):
                    save_safe_head(joblib.load(pickled), stored.path)
                    added.append(stored.tag)
    return added
