"""Checkpoints that keep-last deletes from disk leave the database, and the eval form stops offering them."""

from __future__ import annotations

from django.urls import reverse

from modelcore.config import preset
from webapp.projects.models import Project
from webapp.runs import transitions
from webapp.runs.models import Checkpoint, Run, RunStatus
from workers.supervisor import supervise


def test_pruned_checkpoints_are_not_offered_for_evaluation(team, alice, client, fake_command):
    project = Project.objects.create(team=team, name="pruning")
    run = Run.objects.create(project=project, name="pruned", config=preset("tiny-cpu").to_dict())
    run = transitions.claim_for_launch(run.id, "w")
    # Checkpoints at steps 2, 4, ..., 12; the fake trainer keeps the last two on disk, like keep_last=2.
    status = supervise(run, command=fake_command("checkpoints", 12, "--keep-last", "2"), poll_seconds=0.05)
    assert status == RunStatus.COMPLETED
    on_disk = sorted(int(p.name[5:]) for p in (run.run_dir / "checkpoints").iterdir())
    assert on_disk == [10, 12]
    assert sorted(Checkpoint.objects.filter(run=run).values_list("step", flat=True)) == on_disk

    client.force_login(alice)
    page = client.get(reverse("evals:new", args=[project.id])).content.decode()
    assert ">step 12</option>" in page and ">step 10</option>" in page
    for pruned in (2, 4, 6, 8):
        assert f">step {pruned}</option>" not in page


def test_forgetting_missing_checkpoints_keeps_the_ones_on_disk(make_run):
    run = make_run()
    transitions.record_checkpoints(
        run.id, [{"step": s, "path": f"checkpoints/step_{s:06d}"} for s in (5, 10, 15)]
    )
    assert transitions.forget_missing_checkpoints(run.id, {10, 15, 20}) == [5]
    assert sorted(Checkpoint.objects.filter(run=run).values_list("step", flat=True)) == [10, 15]
    assert transitions.forget_missing_checkpoints(run.id, {10, 15}) == []


def test_a_run_dir_without_a_checkpoints_folder_keeps_its_rows(make_run, fake_command):
    """An unreachable or never-written folder proves nothing: the rows stay."""
    run = transitions.claim_for_launch(make_run().id, "w")
    # "complete" reports a checkpoint without writing a folder.
    assert supervise(run, command=fake_command("complete", 4), poll_seconds=0.05) == RunStatus.COMPLETED
    assert list(Checkpoint.objects.filter(run=run).values_list("step", flat=True)) == [4]
