"""Sample events into RunSample rows: by step and prompt, a re-read or a resume replacing them."""

from __future__ import annotations

import pytest

from modelcore.events import EVENTS_FILE, EventWriter
from webapp.runs.models import Run, RunSample
from webapp.runs.selectors import samples_table
from workers import ingest


@pytest.mark.django_db
def test_samples_are_stored_by_step_and_prompt_and_shown_as_a_table(make_run, tmp_path):
    run = make_run(status="running", attempt=1)
    with EventWriter(tmp_path) as writer:
        writer.metric(10, {"train/loss": 3.0})
        writer.sample(10, [("def ", "foo():"), ("import ", "os")])
        writer.sample(20, [("def ", "bar(x):"), ("import ", "sys")])
    ingest.ingest_new_events(run, tmp_path / EVENTS_FILE)
    assert list(RunSample.objects.filter(run=run).values_list("step", "index", "text")) == [
        (10, 0, "foo():"),
        (10, 1, "os"),
        (20, 0, "bar(x):"),
        (20, 1, "sys"),
    ]
    assert samples_table(run) == {
        "steps": [10, 20],
        "rows": [
            {"prompt": "def ", "texts": ["foo():", "bar(x):"]},
            {"prompt": "import ", "texts": ["os", "sys"]},
        ],
    }

    # A crash's re-read of the same lines, then a resumed attempt that samples step 20 again.
    Run.objects.filter(pk=run.pk).update(events_offset=0)
    run.refresh_from_db()
    ingest.ingest_new_events(run, tmp_path / EVENTS_FILE)
    with EventWriter(tmp_path) as writer:
        writer.sample(20, [("def ", "baz():")])
    ingest.ingest_new_events(run, tmp_path / EVENTS_FILE)
    assert RunSample.objects.filter(run=run).count() == 4
    assert samples_table(run)["rows"][0]["texts"] == ["foo():", "baz():"]
    assert samples_table(run, last_steps=1)["steps"] == [20]
