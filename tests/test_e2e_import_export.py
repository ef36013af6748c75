"""End to end, embedded mode: a version leaves as a .tar.gz (GET /v1/models/{name}/download) that
plain SetFit loads, and comes back in (POST /v1/models/import) without the pickle permission, with
identical predictions; pickled heads, wrong sources and wrong labels are refused with what to do.
Through the Python client (`download`, `import_model`) and raw HTTP.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from fewshot.base_models import resolve_base_model
from fewshot.client import FewshotClient
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-models")


@pytest.fixture(scope="module")
def server(live_server_factory, local_dir: Path) -> LiveServer:
    return live_server_factory("import-export", LOCAL_MODEL_DIRS=str(local_dir))


@pytest.fixture(scope="module")
def client(server: LiveServer) -> httpx.Client:
    return server.client()


@pytest.fixture(scope="module")
def trained(client: httpx.Client, train_examples: list[dict]) -> dict:
    """A fine-tuned version (its body's weights differ from the base model's): what travels is all of it."""
    response = client.post("/v1/train", json={"model_name": "intents", "base_model": BASE_MODEL,
                                              "examples": train_examples, "num_iterations": 1})
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    return client.get("/v1/models/intents").json()


@pytest.fixture(scope="module")
def exported(server: LiveServer, trained: dict, local_dir: Path) -> Path:
    """The trained version downloaded with the Python client and unpacked inside LOCAL_MODEL_DIRS."""
    with FewshotClient(server.url) as fewshot:
        directory = fewshot.download(trained["tag"], local_dir, extract=True)
    assert directory == local_dir / f"intents-{trained['model_version']}"
    return directory


def predictions(client: httpx.Client, model: str, texts: list[str]) -> list[dict]:
    response = client.post("/v1/predict", json={"model_name": model, "texts": texts})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def imported(client: httpx.Client, body: dict, status: str = "completed") -> dict:
    response = client.post("/v1/models/import", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "import"
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed", "cancelled"})
    assert job["status"] == status and job["kind"] == "import", job
    return job


def test_a_download_is_a_setfit_directory_with_a_model_card(client: httpx.Client, trained: dict,
                                                             tmp_path: Path) -> None:
    response = client.get(f"/v1/models/{trained['tag']}/download")
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    name = f"intents-{trained['model_version']}"
    assert response.headers["content-disposition"] == f'attachment; filename="{name}.tar.gz"'
    latest = client.get("/v1/models/intents/download")  # the name alone: its latest version, this one
    assert latest.headers["content-disposition"] == response.headers["content-disposition"]
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(response.content)
    with tarfile.open(archive) as contents:
        members = contents.getnames()
    assert all(member.startswith(f"{name}/") for member in members)
    files = {member.removeprefix(f"{name}/") for member in members}
    assert {"config_setfit.json", "model_head.pkl", "model_head.skops", "README.md", "modules.json",
            "model.safetensors", "tokenizer.json"} <= files, files
    assert "model.yaml" not in files and "fewshot_calibration_texts.json" not in files  # the store's, the user's


def test_the_model_card_holds_the_training_metadata(exported: Path, trained: dict) -> None:
    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: setfit") and f"base_model: {BASE_MODEL}" in card
    assert f"# {trained['tag']}" in card and "| training examples | 32 |" in card
    assert f"Accuracy **{trained['accuracy']:.4f}** on {trained['eval_num_examples']} examples" in card
    for label in trained["labels"]:
        assert f"| `{label}` |" in card
    assert trained["created_at"][:19] in card and "fewshot 0.1.0" in card
    matrix = trained["confusion_matrix"]
    assert "Confusion matrix of the same examples" in card
    for label, row in zip(matrix["labels"], matrix["counts"], strict=True):
        assert f"| `{label}` | {' | '.join(map(str, row))} |" in card


def test_plain_setfit_loads_the_download_in_a_fresh_process_with_identical_labels(
        client: httpx.Client, exported: Path, test_examples: list[dict]) -> None:
    texts = [example["text"] for example in test_examples[:24]]
    script = ("import json, sys; from setfit import SetFitModel; "
              "model = SetFitModel.from_pretrained(sys.argv[1]); "
              "print(json.dumps([str(label) for label in model.predict(json.loads(sys.argv[2]))]))")
    run = subprocess.run([sys.executable, "-c", script, str(exported), json.dumps(texts)], capture_output=True,
                         text=True, timeout=300, cwd=PROJECT_ROOT, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == [p["label"] for p in predictions(client, "intents",
                                                                                                 texts)]


def test_an_imported_download_serves_identical_predictions_without_the_pickle_permission(
        server: LiveServer, client: httpx.Client, exported: Path, trained: dict, test_examples: list[dict]) -> None:
    evaluation = test_examples[:20]
    with FewshotClient(server.url) as fewshot:
        accepted = fewshot.import_model("copy", str(exported), eval_examples=evaluation)
        assert accepted.kind == "import" and accepted.status == "pending"
        job = fewshot.wait(accepted.job_id)
    model = client.get("/v1/models/copy").json()
    assert job.model_version == model["model_version"]
    assert model["strategy"] == "imported" and model["source"] == str(exported) and model["revision"] is None
    assert model["labels"] == trained["labels"] and model["num_examples"] is None
    assert model["training_duration_seconds"] is None
    assert model["eval_source"] == "eval_examples" and model["eval_num_examples"] == len(evaluation)
    assert 0 <= model["accuracy"] <= 1 and set(model["label_metrics"]) == set(trained["labels"])
    texts = [example["text"] for example in test_examples]
    original, copy = predictions(client, "intents", texts), predictions(client, f"copy:{model['model_version']}",
                                                                        texts)
    assert [p["label"] for p in copy] == [p["label"] for p in original]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(original, copy, strict=True)) < 1e-6
    expected_accuracy = sum(p["label"] == e["label"] for p, e in zip(original, evaluation, strict=False)) / 20
    assert model["accuracy"] == pytest.approx(expected_accuracy)
    listed = client.get("/v1/jobs", params={"model_name": "copy"}).json()["jobs"]
    assert [job["kind"] for job in listed] == ["import"]

    # Served, listed, downloaded and deleted like a trained version.
    assert any(m["model_name"] == "copy" for m in client.get("/v1/models").json()["models"])
    card = client.get("/v1/models/copy/download")
    assert card.status_code == 200
    assert client.delete("/v1/models/copy").json()["deleted"] == [model["tag"]]
    assert client.post("/v1/predict", json={"model_name": "copy", "texts": ["x"]}).status_code == 404


class _RunsCode:
    """Unpickling this creates the file at `path`: what a malicious model_head.pkl could do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.path)}",))


def planted(exported: Path, directory: Path, marker: Path, keep_safe_head: bool) -> Path:
    """A copy of the download whose model_head.pkl would create `marker` when unpickled."""
    shutil.copytree(exported, directory,
                    ignore=lambda _, names: [] if keep_safe_head else [n for n in names if n == "model_head.skops"])
    (directory / "model_head.pkl").write_bytes(pickle.dumps(_RunsCode(marker)))
    return directory


def test_a_malicious_pickle_never_runs_through_the_api(client: httpx.Client, exported: Path, local_dir: Path,
                                                       test_examples: list[dict]) -> None:
    """Through the live POST /v1/models/import: beside a safe head the pickle is never read; alone it is
    refused. (test_a_pickled_head_is_refused_until_the_operator_allows_it shows the same file does run
    code once the operator allows pickles: these checks can fail.)"""
    marker = local_dir / "pickle-ran"
    beside = planted(exported, local_dir / "planted-beside-safe-head", marker, keep_safe_head=True)
    imported(client, {"model_name": "planted", "source": str(beside)})
    texts = [example["text"] for example in test_examples[:8]]
    assert [p["label"] for p in predictions(client, "planted", texts)] == \
        [p["label"] for p in predictions(client, "intents", texts)]
    alone = planted(exported, local_dir / "planted-alone", marker, keep_safe_head=False)
    refused = imported(client, {"model_name": "planted-alone", "source": str(alone)}, status="failed")
    assert "TRUST_PICKLED_HEADS=true" in refused["error"]
    assert not marker.exists()


def test_a_pickled_head_is_refused_until_the_operator_allows_it(
        server: LiveServer, exported: Path, local_dir: Path, test_examples: list[dict]) -> None:
    pickled = local_dir / "pickled-only"
    shutil.copytree(exported, pickled, ignore=lambda _, names: [n for n in names if n == "model_head.skops"])
    client = server.client()
    refused = imported(client, {"model_name": "pickled", "source": str(pickled)}, status="failed")
    assert "model_head.pkl, a pickle" in refused["error"] and "TRUST_PICKLED_HEADS=true" in refused["error"]
    assert client.get("/v1/models/pickled").status_code == 404

    server.restart(TRUST_PICKLED_HEADS="true")
    client = server.client()
    imported(client, {"model_name": "pickled", "source": str(pickled)})
    texts = [example["text"] for example in test_examples[:16]]
    assert [p["label"] for p in predictions(client, "pickled", texts)] == \
        [p["label"] for p in predictions(client, "intents", texts)]
    # What the service stored has its safe head again: its download imports without the permission.
    with tarfile.open(fileobj=io.BytesIO(client.get("/v1/models/pickled/download").content)) as tar:
        assert any(name.endswith("/model_head.skops") for name in tar.getnames())
    # The control of test_a_malicious_pickle_never_runs_through_the_api: allowed, the planted pickle runs.
    marker = local_dir / "pickle-ran"
    assert not marker.exists()
    alone = local_dir / "planted-alone"  # that test's file, made here when this test runs alone
    if not alone.exists():
        planted(exported, alone, marker, keep_safe_head=False)
    imported(client, {"model_name": "planted-alone", "source": str(alone)}, status="failed")
    assert marker.exists()


def test_symbolic_links_out_of_local_model_dirs_are_refused(client: httpx.Client, exported: Path, local_dir: Path,
                                                            tmp_path: Path, train_examples: list[dict]) -> None:
    """A source (import) or base model (training) inside LOCAL_MODEL_DIRS whose files link outside it: a
    tokenizer file linked to a secret would be saved into the version, and downloadable."""
    secret = tmp_path / "secret.txt"  # outside LOCAL_MODEL_DIRS
    secret.write_text("[PAD]\nhunter2\n")
    linked_out = local_dir / "linked-out"
    shutil.copytree(exported, linked_out, ignore=lambda _, names: [n for n in names if n == "vocab.txt"])
    (linked_out / "vocab.txt").symlink_to(secret)
    refused = imported(client, {"model_name": "linked", "source": str(linked_out)}, status="failed")
    assert f"lead outside LOCAL_MODEL_DIRS through symbolic links (vocab.txt → {secret})" in refused["error"], refused
    base = local_dir / "base-linked-out"
    shutil.copytree(resolve_base_model(BASE_MODEL).location, base, ignore=lambda _, names: [
        n for n in names if n == "1_Pooling"])
    (base / "1_Pooling").symlink_to(tmp_path, target_is_directory=True)  # a folder leading out
    response = client.post("/v1/train", json={"model_name": "linked", "base_model": str(base),
                                              "examples": train_examples, "strategy": "head"})
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "failed" and "1_Pooling →" in job["error"] and "LOCAL_MODEL_DIRS" in job["error"], job
    linked_in = local_dir / "linked-in"  # links that stay inside LOCAL_MODEL_DIRS are fine
    shutil.copytree(exported, linked_in, ignore=lambda _, names: [n for n in names if n == "vocab.txt"])
    (linked_in / "vocab.txt").symlink_to(exported / "vocab.txt")
    imported(client, {"model_name": "linked", "source": str(linked_in)})
    assert secret.read_text() not in client.get("/v1/models/linked/download").text


def test_what_is_not_a_setfit_classifier_fails_with_what_was_found(server: LiveServer, local_dir: Path) -> None:
    client = server.client()
    base = local_dir / "just-a-sentence-transformer"
    shutil.copytree(resolve_base_model(BASE_MODEL).location, base)
    failed = imported(client, {"model_name": "body", "source": str(base)}, status="failed")
    assert "is not a SetFit classifier: found a sentence-transformers model without a SetFit classification head" \
        in failed["error"] and "base_model in POST /v1/train" in failed["error"]
    empty = local_dir / "empty"
    empty.mkdir()
    failed = imported(client, {"model_name": "empty", "source": str(empty)}, status="failed")
    assert "found no model files (an empty directory)" in failed["error"]


def test_an_unreachable_hub_model_fails_with_what_to_do(server: LiveServer) -> None:
    failed = imported(server.client(), {"model_name": "hub", "source": "some-org/some-setfit-model",
                                        "revision": "v1.0"}, status="failed")
    assert "could not be downloaded from the Hugging Face Hub" in failed["error"]
    assert "HF_TOKEN" in failed["error"] and "LOCAL_MODEL_DIRS" in failed["error"]


def test_labels_that_do_not_fit_the_head_fail_the_job(server: LiveServer, exported: Path) -> None:
    client = server.client()
    failed = imported(client, {"model_name": "renamed", "source": str(exported), "labels": ["a", "b", "c"]},
                      status="failed")
    assert "labels: the model's head has 4 classes, but 3 labels were given" in failed["error"]
    failed = imported(client, {"model_name": "renamed", "source": str(exported),
                               "eval_examples": [{"text": "hello", "label": "greeting"}]}, status="failed")
    assert "eval_examples: labels must be among the model's labels" in failed["error"] and "greeting" in \
        failed["error"]
    renamed = imported(client, {"model_name": "renamed", "source": str(exported), "labels": ["w", "x", "y", "z"]})
    assert client.get(f"/v1/models/renamed:{renamed['model_version']}").json()["labels"] == ["w", "x", "y", "z"]
    assert predictions(client, "renamed", ["my card has not arrived"])[0]["label"] in {"w", "x", "y", "z"}


@pytest.mark.parametrize(("body", "message"), [
    ({"model_name": "x", "source": "/etc"}, "source: local paths must be inside LOCAL_MODEL_DIRS"),
    ({"model_name": "x", "source": "../up/and-out"}, "source: must be a Hugging Face Hub id"),
    ({"model_name": "x", "source": "LOCAL", "revision": "main"}, "revision: is for a Hugging Face Hub source only"),
    ({"model_name": "x", "source": "org/model", "revision": "a/../b"}, "revision: must not contain '..'"),
    ({"model_name": "x", "source": "org/model", "labels": ["a", "a"]}, "labels: must be distinct; repeated: a"),
    ({"model_name": "x", "source": "org/model", "labels": ["a"]}, "labels: List should have at least 2 items"),
    ({"model_name": "x", "source": "org/model", "labels": ["a", "b"], "eval_examples": [{"text": "t", "label": "c"}]},
     "eval_examples: labels must be among `labels`; unknown: c"),
    ({"model_name": "Bad Name", "source": "org/model"}, "model_name: must be 1-63 characters"),
    ({"source": "org/model"}, "model_name: Field required"),
])
def test_bad_import_requests_are_400_naming_the_field(client: httpx.Client, local_dir: Path, body: dict,
                                                      message: str) -> None:
    if body.get("source") == "LOCAL":
        body = {**body, "source": str(local_dir)}
    response = client.post("/v1/models/import", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"], response.json()


def test_download_errors(client: httpx.Client, trained: dict) -> None:
    assert client.get("/v1/models/nothing-here/download").status_code == 404
    unknown_version = client.get("/v1/models/intents:nope/download")
    assert unknown_version.status_code == 404 and "has no version 'nope'" in unknown_version.json()["error"]
    bad = client.get("/v1/models/Not%20A%20Name/download")
    assert bad.status_code == 400 and bad.json()["error"].startswith("model_name:")


def native_libraries(process: psutil.Process) -> set[str]:
    """The shared libraries mapped into a live process (its /proc/<pid>/maps)."""
    return {line.split()[-1] for line in Path(f"/proc/{process.pid}/maps").read_text().splitlines()
            if ".so" in line.split()[-1]}


def test_the_gateway_never_loads_torch_while_it_serves(server: LiveServer, client: httpx.Client, trained: dict,
                                                      exported: Path, test_examples: list[dict]) -> None:
    """After training, a download, an import and predictions, the gateway worker has mapped no torch
    library, while the inference worker has (the control: the check sees torch where it is). The import
    contracts see only the packages' imports, not a lazy one inside service.py's routes."""
    imported(client, {"model_name": "gateway-check", "source": str(exported)})
    predictions(client, "gateway-check", [example["text"] for example in test_examples[:4]])
    assert client.get("/v1/models/gateway-check/download").status_code == 200
    gateways, inference = server.workers("fewshot"), server.workers("fewshot-inference")
    assert gateways and inference
    torch_libraries = [library for library in native_libraries(inference[0]) if "/torch/lib/" in library]
    assert torch_libraries, "the control: the inference worker maps libtorch"
    for gateway in gateways:
        assert not [library for library in native_libraries(gateway) if "/torch/" in library], gateway.cmdline()


class _HostileServer(BaseHTTPRequestHandler):
    """Answers downloads as a hostile or broken server might: a path in the file name, and a tar whose
    members climb out of the folder, are absolute, or link outside. /schema.json and /readyz as the real
    server answers them, so that the Python client talks to it."""

    schema = b""
    archive = b""

    def do_GET(self) -> None:
        if self.path.endswith("/download"):
            body, headers = self.archive, {"Content-Type": "application/gzip",
                                           "Content-Disposition": 'attachment; filename="../../escaped.tar.gz"'}
        else:
            body = self.schema if self.path == "/schema.json" else b"{}"
            headers = {"Content-Type": "application/json"}
        self.send_response(200)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def hostile_archive(member: tarfile.TarInfo, content: bytes = b"x") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.addfile(member, io.BytesIO(content) if member.isfile() else None)
    return out.getvalue()


@pytest.mark.parametrize("member", ["climbs", "absolute", "links-out"])
def test_the_client_keeps_a_hostile_download_inside_its_folder(server: LiveServer, tmp_path: Path,
                                                                member: str) -> None:
    if member == "links-out":
        entry = tarfile.TarInfo("model/vocab.txt")
        entry.type, entry.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        entry = tarfile.TarInfo("model/../../../escaped.txt" if member == "climbs" else str(tmp_path / "absolute.txt"))
        entry.size = 1
    _HostileServer.schema = httpx.get(f"{server.url}/schema.json").content
    _HostileServer.archive = hostile_archive(entry)
    hostile = ThreadingHTTPServer(("127.0.0.1", 0), _HostileServer)
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    folder = tmp_path / "a" / "b" / "downloads"
    try:
        with FewshotClient(f"http://127.0.0.1:{hostile.server_port}") as fewshot:
            assert fewshot.download("intents", folder) == folder / "escaped.tar.gz"  # the name, never its path
            if member == "absolute":  # unpacked, its leading "/" dropped: inside the folder
                fewshot.download("intents", folder, extract=True)
            else:
                with pytest.raises(tarfile.FilterError):
                    fewshot.download("intents", folder, extract=True)
    finally:
        hostile.shutdown()
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if not path.is_dir())
    inside = [f"a/b/downloads/{str(tmp_path / 'absolute.txt').lstrip('/')}"] if member == "absolute" else []
    assert written == sorted(["a/b/downloads/escaped.tar.gz", *inside]), written
