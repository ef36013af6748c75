"""The rooms of fewshot/api called without HTTP: each handler is handed the parts it declares (a real
SQLite store; a training queue that records what it is given), and its rules answer as over HTTP.
The end-to-end suites prove the same routes through a real `bentoml serve`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from fewshot.api import examples, jobs, training
from fewshot.api.example_schemas import AddExamplesRequest, ExamplesAdded, RetrainRequest
from fewshot.api.job_schemas import JobList
from fewshot.api.training_schemas import ImportRequest, TrainAccepted, TrainRequest
from fewshot.records.examples import SqliteExampleStore, set_digest
from fewshot.records.jobs import JobRecord, QueueFull, RetrainPlan, SqliteJobStore, new_job


class RecordingQueue:
    """A TrainingQueue that records what the routes submit (and refuses when told the queue is full)."""

    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.retrains: list[tuple[TrainRequest, RetrainPlan]] = []

    def submit_retrain(self, request: TrainRequest, plan: RetrainPlan, max_queued: int) -> JobRecord:
        if self.full:
            raise QueueFull(f"the training queue is full (MAX_QUEUED_JOBS={max_queued})")
        self.retrains.append((request, plan))
        return new_job(request.model_name, request.model_dump(mode="json"), kind="retrain")

    def submit_training(self, request: TrainRequest, max_queued: int) -> JobRecord:
        raise NotImplementedError

    def submit_import(self, request: ImportRequest, max_queued: int) -> JobRecord:
        raise NotImplementedError

    def cancel_job(self, job_id: str) -> JobRecord | None:
        raise NotImplementedError


def body_of(response: JSONResponse) -> dict:
    return json.loads(response.body)


def query(**parameters: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                    "query_string": "&".join(f"{k}={v}" for k, v in parameters.items()).encode()})


@pytest.fixture
def sets(tmp_path: Path) -> SqliteExampleStore:
    return SqliteExampleStore(tmp_path / "jobs.db")


def test_the_examples_room_adds_to_a_set_and_refuses_a_second_form_naming_the_rule(sets) -> None:
    name = f"rooms-{uuid.uuid4().hex[:8]}"
    added = examples.add_examples(name, AddExamplesRequest(examples=[{"text": "my card is lost", "label": "card"}]),
                                  sets)
    assert isinstance(added, ExamplesAdded) and added.total == 1
    assert [example.text for example in added.added] == ["my card is lost"]

    refused = examples.add_examples(name, AddExamplesRequest(examples=[{"text": "both", "labels": ["card", "fee"]}]),
                                    sets)
    assert isinstance(refused, JSONResponse) and refused.status_code == 400
    assert body_of(refused)["error"] == (f"examples: the example set of {name!r} is single-label: send `label` "
                                         "(one label, or null)")
    assert sets.count(name) == 1  # nothing of the refused request was written


def test_the_jobs_room_pages_newest_first_and_names_an_unknown_cursor(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    created = [new_job("rooms", {"n": n}) for n in range(3)]
    for record in created:
        store.create(record)

    first = jobs.list_jobs(query(limit="2"), store)
    assert isinstance(first, JobList) and len(first.jobs) == 2 and first.next_cursor == first.jobs[-1].job_id
    rest = jobs.list_jobs(query(limit="2", cursor=first.next_cursor), store)
    assert isinstance(rest, JobList) and rest.next_cursor is None
    assert {job.job_id for job in first.jobs + rest.jobs} == {record.job_id for record in created}

    unknown = jobs.list_jobs(query(cursor="no-such-job"), store)
    assert isinstance(unknown, JSONResponse) and unknown.status_code == 400
    assert body_of(unknown)["error"].startswith("cursor: no job with this id")


def test_the_retrain_room_queues_the_whole_set_with_its_digest_or_answers_429(sets) -> None:
    name = f"rooms-{uuid.uuid4().hex[:8]}"  # no version in the store: the set alone decides the request
    assert isinstance(training.retrain(name, RecordingQueue(), sets), JSONResponse)  # no set yet: 404
    texts = {"card": ["my card is lost", "card stolen", "new card please", "card not arrived"],
             "fee": ["why this fee", "charged twice", "fee on transfer", "refund the fee"]}
    examples.add_examples(name, AddExamplesRequest(examples=[{"text": text, "label": label}
                                                             for label, group in texts.items() for text in group]),
                          sets)

    queue = RecordingQueue()
    accepted = training.retrain(name, queue, sets, RetrainRequest(strategy="head"))
    assert isinstance(accepted, TrainAccepted)
    [(request, plan)] = queue.retrains
    trained_on = [e.text for e in request.examples] + [e.text for e in request.eval_examples or []]
    assert sorted(trained_on) == sorted(text for group in texts.values() for text in group)
    assert (plan.strategy, plan.set_size, plan.digest, plan.from_version) == ("head", 8, set_digest(sets.all(name)),
                                                                              None)

    full = training.retrain(name, RecordingQueue(full=True), sets, RetrainRequest())
    assert isinstance(full, JSONResponse) and full.status_code == 429 and full.headers["retry-after"]
