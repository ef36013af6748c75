"""Version retention on the real BentoML model store (in a subprocess with its own BENTOML_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.live_server import PROJECT_ROOT

SCRIPT = """
import json, time
from fewshot import store
tags = []
for i in range(4):
    stored = store.register("m", lambda d, i=i: (d / "weights.txt").write_text(str(i)), {"i": i})
    tags.append(stored.tag)
    time.sleep(0.01)
store.register("other", lambda d: (d / "weights.txt").write_text("x"), {})
removed = store.prune("m", keep=2)
print(json.dumps({"tags": tags, "removed": removed, "left": [v.tag for v in store.versions("m")],
                  "latest": store.latest("m").tag, "other": [v.tag for v in store.versions("other")],
                  "none": store.versions("never-trained")}))
"""


def store_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a process whose BentoML store is a fresh one under `tmp_path`."""
    return {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}


def run_in_store(tmp_path: Path, script: str) -> dict:
    """Run `script` in a process on that store; the last line it prints, as JSON."""
    output = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=store_env(tmp_path), check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def test_prune_keeps_the_newest_versions_of_that_model_only(tmp_path: Path) -> None:
    result = run_in_store(tmp_path, SCRIPT)
    tags = result["tags"]
    assert result["left"] == [tags[3], tags[2]]  # newest first
    assert sorted(result["removed"]) == sorted(tags[:2])
    assert result["latest"] == tags[3]
    assert len(result["other"]) == 1  # another model's versions are untouched
    assert result["none"] == []


WRITER = """
import sys
from fewshot import store
for i in range(6):
    store.register("shared", lambda d, i=i: (d / "weights.txt").write_text(sys.argv[1] * 200_000), {"i": i})
"""

CHECK = """
import json
from pathlib import Path
from fewshot import store
half = store.model_store_directory() / "shared" / "half-written"
half.mkdir()
(half / "weights.txt").write_text("cut short")
listed = [v.tag for v in store.versions("shared")]
removed = store.remove_incomplete_versions()
versions = store.versions("shared")
print(json.dumps({"listed": listed, "removed": removed, "latest": store.latest("shared").tag,
                  "newest": versions[0].tag, "count": len(versions), "half_exists": half.exists(),
                  "sizes": sorted({len((v.path / "weights.txt").read_text()) for v in versions})}))
"""


def test_concurrent_writers_leave_a_complete_store_whose_latest_is_the_newest(tmp_path: Path) -> None:
    """Two processes register versions of one model at once (two trainers on a shared volume)."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, letter], cwd=PROJECT_ROOT, env=store_env(tmp_path))
               for letter in "ab"]
    assert [writer.wait(120) for writer in writers] == [0, 0]
    result = run_in_store(tmp_path, CHECK)
    assert result["count"] == 12 and len(result["listed"]) == 12  # the half-written one is never listed
    assert result["removed"] == ["shared:half-written"] and not result["half_exists"]
    assert result["latest"] == result["newest"]
    assert result["sizes"] == [200_000]  # every version's file whole


def test_metadata_nulls_are_left_out_and_read_back_as_absent() -> None:
    from fewshot.store import _without_nulls

    assert _without_nulls({"accuracy": None, "comparison": {"head_accuracy": None, "winner": "head"},
                           "labels": ["a", None], "n": 0}) == {"comparison": {"winner": "head"}, "labels": ["a"],
                                                              "n": 0}


def test_metadata_added_later_is_read_back_and_the_version_stays_complete(tmp_path: Path) -> None:
    result = run_in_store(tmp_path, """
import json
from fewshot import store
stored = store.register("m", lambda d: (d / "weights.bin").write_bytes(b"x"), {"job_id": "j", "labels": ["a"]})
store.add_metadata(stored.tag, {"comparison": {"winner": "head", "head_accuracy": None}})
again = store.resolve(stored.tag)
print(json.dumps({"metadata": again.metadata, "versions": [v.tag for v in store.versions("m")],
                  "files": sorted(p.name for p in again.path.iterdir())}))
""")
    assert result["metadata"] == {"job_id": "j", "labels": ["a"], "comparison": {"winner": "head"}}
    assert len(result["versions"]) == 1
    assert ".model.yaml.partial" not in result["files"]
