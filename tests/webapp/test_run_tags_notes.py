"""Tags and notes on runs: members edit them (page and API), viewers read, other teams see nothing;
a note's markdown is rendered without any HTML or script of its own, and keeps a short history."""

from __future__ import annotations

import json

import pytest

from webapp.annotations.models import NoteRevision, RunTag
from webapp.annotations.services import MAX_TAGS_PER_RUN, NOTE_HISTORY, save_note


def tags_of(run) -> list[str]:
    return sorted(RunTag.objects.filter(run=run).values_list("name", flat=True))


def test_a_member_tags_a_run_inline_and_takes_a_tag_off(client_for, alice, run):
    client = client_for(alice)
    response = client.post(f"/runs/{run.id}/tags", {"add": " Baseline "})
    assert response.status_code == 200 and response.json()["tags"] == ["baseline"]
    client.post(f"/runs/{run.id}/tags", {"add": ["lr-3e-4", "baseline"]})
    assert tags_of(run) == ["baseline", "lr-3e-4"]
    assert client.post(f"/runs/{run.id}/tags", {"remove": "baseline"}).json()["tags"] == ["lr-3e-4"]
    # The table shows the chip, with its remove button for a member, and filters by it.
    table = client.get(f"/projects/{run.project_id}/?tag=lr-3e-4").content.decode()
    assert 'data-tag="lr-3e-4"' in table and 'data-remove-tag="lr-3e-4"' in table


def test_viewers_read_tags_and_other_teams_get_404(client_for, bob, charlie, run):
    RunTag.objects.create(run=run, name="keep")
    viewer = client_for(bob)
    refused = viewer.post(f"/runs/{run.id}/tags", {"add": "mine"})
    assert refused.status_code == 403 and b"member role" in refused.content
    assert viewer.post(f"/runs/{run.id}/tags", {"remove": "keep"}).status_code == 403
    page = viewer.get(f"/runs/{run.id}/").content.decode()
    assert 'data-tag="keep"' in page and "data-remove-tag" not in page and "note-form" not in page
    assert client_for(charlie).post(f"/runs/{run.id}/tags", {"add": "x"}).status_code == 404
    assert tags_of(run) == ["keep"]


@pytest.mark.parametrize(
    "tag", ["", "   ", "has space", "<script>", "x" * 41, "-leading", "ünïcode", "a\x00b"]
)
def test_a_bad_tag_is_a_400_naming_the_field(api, alice, run, tag):
    response = api(alice, "POST", f"/api/v1/runs/{run.id}/tags", {"tags": [tag]})
    assert response.status_code == 400 and any(k.startswith("tags") for k in response.json()["errors"])
    assert tags_of(run) == []


def test_tags_over_the_api(api, alice, bob, charlie, run):
    path = f"/api/v1/runs/{run.id}/tags"
    assert api(alice, "POST", path, {"tags": ["a", "b", "c"]}).json()["tags"] == ["a", "b", "c"]
    assert api(bob, "GET", path).json() == {"id": run.id, "tags": ["a", "b", "c"]}
    assert api(alice, "DELETE", path, {"tags": ["a"]}).json()["tags"] == ["b", "c"]
    assert api(alice, "DELETE", path + "?tag=b").json()["tags"] == ["c"]
    assert api(bob, "POST", path, {"tags": ["x"]}).status_code == 403
    assert api(bob, "DELETE", path, {"tags": ["c"]}).status_code == 403
    assert api(charlie, "GET", path).status_code == 404
    assert api(charlie, "DELETE", path, {"tags": ["c"]}).status_code == 404
    assert api(alice, "POST", path, {"tags": "not-a-list"}).status_code == 400
    assert api(alice, "POST", path, {"tags": {"a": 1}}).status_code == 400
    assert api(alice, "POST", path, {}).status_code == 400
    assert api(alice, "POST", path, {"tags": ["ok"], "extra": 1}).status_code == 400
    assert tags_of(run) == ["c"]


def test_a_run_keeps_at_most_its_cap_of_tags(api, alice, run):
    path = f"/api/v1/runs/{run.id}/tags"
    assert api(alice, "POST", path, {"tags": [f"t{i}" for i in range(MAX_TAGS_PER_RUN)]}).status_code == 200
    response = api(alice, "POST", path, {"tags": ["one-more"]})
    assert response.status_code == 400 and "at most" in response.json()["errors"]["tags"]
    assert len(tags_of(run)) == MAX_TAGS_PER_RUN


HOSTILE = """# Why this run

Trying **rotary** with `lr=3e-4`.

<script>alert('x')</script>
<img src=x onerror="alert(1)">
[click](javascript:alert(2)) [docs](https://example.com/doc)
<a href="javascript:alert(3)">raw link</a>
"""


def test_a_note_renders_markdown_without_any_html_of_its_own(client_for, alice, bob, run):
    response = client_for(alice).post(f"/runs/{run.id}/note", {"text": HOSTILE})
    assert response.status_code == 302
    html = client_for(bob).get(f"/runs/{run.id}/").content.decode()
    note = html.split('id="run-note"')[1].split("</div>")[0]
    assert (
        "<h1>Why this run</h1>" in note
        and "<strong>rotary</strong>" in note
        and "<code>lr=3e-4</code>" in note
    )
    assert "<script" not in note and "<img" not in note and '<a href="javascript' not in note
    assert '<a href="javascript' not in note  # the raw tag is text: &lt;a href=...
    assert '<a href="https://example.com/doc" rel="noopener noreferrer nofollow">docs</a>' in note
    assert "&lt;script&gt;" in note  # shown as the text it is


def test_notes_keep_a_short_history_and_viewers_cannot_edit(client_for, api, alice, bob, charlie, run):
    for i in range(NOTE_HISTORY + 3):
        save_note(user=alice, run=run, text=f"version {i}")
    assert NoteRevision.objects.filter(run=run).count() == NOTE_HISTORY
    body = api(bob, "GET", f"/api/v1/runs/{run.id}/note").json()
    assert body["text"] == f"version {NOTE_HISTORY + 2}" and body["author"] == "alice"
    assert [h["text"] for h in body["history"]][-1] == "version 3"
    page = client_for(bob).get(f"/runs/{run.id}/").content.decode()
    assert "Earlier versions (9)" in page
    assert client_for(bob).post(f"/runs/{run.id}/note", {"text": "mine"}).status_code == 403
    assert api(bob, "POST", f"/api/v1/runs/{run.id}/note", {"text": "mine"}).status_code == 403
    assert api(charlie, "GET", f"/api/v1/runs/{run.id}/note").status_code == 404
    assert client_for(charlie).post(f"/runs/{run.id}/note", {"text": "x"}).status_code == 404
    saved = api(alice, "POST", f"/api/v1/runs/{run.id}/note", {"text": "**api**"}).json()
    assert saved["html"] == "<p><strong>api</strong></p>\n"


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "text"), ({"text": 5}, "text"), ({"text": "x" * 20_001}, "text"), ({"text": "a\x00b"}, "text")],
)
def test_a_bad_note_is_a_400_naming_the_field(api, alice, run, body, field):
    response = api(alice, "POST", f"/api/v1/runs/{run.id}/note", raw=json.dumps(body).encode())
    assert response.status_code == 400 and field in response.json()["errors"]
    assert not NoteRevision.objects.exists()
