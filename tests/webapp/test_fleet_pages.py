"""The Fleet page, the run page's queue box and the operator's quota form."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from modelcore.config import preset
from webapp.accounts.models import Team
from webapp.fleet import services
from webapp.fleet.models import Gpu, Host, HostSample, NodeShare, Placement, TeamQuota
from webapp.fleet.selectors import MAX_CHART_POINTS, utilisation_for
from webapp.fleet.services import GpuInfo
from webapp.projects.models import Project
from webapp.runs.models import Run
from workers import scheduler


def gpu_run(project: Project, name: str, gpus: int = 1, **resources) -> Run:
    config = preset("tiny-cpu").to_dict()
    config["parallel"].update(num_processes=gpus, device="auto")
    config["resources"].update(resources)
    return Run.objects.create(project=project, name=name, preset="tiny-cpu", config=config)


@pytest.fixture
def fleet(project):
    """A two-GPU host holding one run of team A and one of another team, and a run of A waiting."""
    host = services.register_host(
        name="gpu-1@node",
        queue="host.gpu-1",
        cpu_slots=0,
        gpus=[GpuInfo("0", "NVIDIA H100", 81559), GpuInfo("1", "NVIDIA H100", 81559)],
    )
    rivals = Project.objects.create(team=Team.objects.create(name="hidden-team"), name="secret-project")
    ours = gpu_run(project, "our-run")
    theirs = gpu_run(rivals, "their-secret-run")
    waiting = gpu_run(project, "waiting-run", 2)
    scheduler.schedule()
    services.beat_host(
        host.name,
        {"util": [0.9, 0.25], "mem_mb": [100, 200], "power_w": [300.0, 120.0]},
        {"0": ours.pk, "1": theirs.pk},
    )
    return {"host": host, "ours": ours, "theirs": theirs, "waiting": waiting}


def test_fleet_page_shows_hosts_gpus_holders_and_utilisation(client, bob, fleet):
    client.force_login(bob)
    response = client.get(reverse("fleet:fleet"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "gpu-1@node" in page and "NVIDIA H100" in page and "2 / 2 GPUs" in page
    assert "our-run" in page
    assert "their-secret-run" not in page, page[
        page.find("their-secret") - 300 : page.find("their-secret") + 50
    ]
    assert "another team's run" in page
    # The queue: our waiting run with its position and reason.
    assert "waiting-run" in page and "needs 2 × GPU, 0 free" in page
    charts = json.loads(
        response.context["charts"]
        and page.split('id="fleet-data" type="application/json">')[1].split("</script>")[0]
    )
    assert charts[0]["host"] == "gpu-1@node"
    assert charts[0]["series"] == {"gpu0 util": [0.9], "gpu1 util": [0.25]}
    assert Gpu.objects.get(host=fleet["host"], index="1").run_id == fleet["theirs"].pk


def test_each_host_of_a_multi_node_run_names_its_node(client, bob, project):
    for name in ("gpu-a@node", "gpu-b@node"):
        services.register_host(name=name, queue=f"host.{name}", gpus=[GpuInfo("0", "NVIDIA H100", 81559)])
    run = gpu_run(project, "two-node-run", 2)
    run.config["launcher"]["nodes"] = 2
    run.save(update_fields=["config"])
    gpu_run(project, "one-node-run", 1)
    assert {run_id for run_id, _ in scheduler.schedule().placed} == {run.pk}  # the single one waits
    first = Placement.objects.get(pk=run.pk).host.name
    second = NodeShare.objects.get(placement_id=run.pk).host.name
    services.beat_host(second, None, {"0": run.pk})
    client.force_login(bob)
    hosts = client.get(reverse("fleet:data")).json()["hosts_html"]
    rows = {name: hosts.split(f'data-host="{name}"')[1].split("</tr>")[0] for name in (first, second)}
    assert "two-node-run</a> (1) · <span" in rows[first] and "node 0 of 2" in rows[first]
    assert "node 1 of 2" in rows[second] and "node 0 of 2" not in rows[second]
    assert (
        'data-gpu="0">' in rows[second]
        and 'two-node-run</a> <span class="muted small fleet-node" style="white-space:nowrap">node 1 of 2'
        in rows[second]
    )
    assert "one-node-run" not in hosts  # it waits: the two-node run filled both hosts


def test_utilisation_is_thinned_keeping_spikes(db):
    host = services.register_host(name="h", queue="q", gpus=[GpuInfo("0")])

    now = timezone.now()
    HostSample.objects.bulk_create(
        HostSample(
            host=host, time=now - dt.timedelta(seconds=5 * i), values={"util": [1.0 if i == 700 else 0.1]}
        )
        for i in range(1500)
    )
    (chart,) = utilisation_for(hours=6)
    assert len(chart["times"]) <= MAX_CHART_POINTS
    assert max(chart["series"]["gpu0 util"]) == 1.0  # the one busy sample survives


def test_bad_hours_is_a_400_naming_the_field(client, bob):
    client.force_login(bob)
    for bad in ("0", "25", "x", "٣"):
        response = client.get(reverse("fleet:fleet"), {"hours": bad})
        assert response.status_code == 400
        assert b"hours" in response.content


def test_run_page_shows_queue_position_and_reason(client, bob, fleet):
    client.force_login(bob)
    page = client.get(reverse("runs:detail", args=[fleet["waiting"].pk])).content.decode()
    assert "Position 1 in the queue" in page and "needs 2 × GPU, 0 free" in page
    placed = client.get(reverse("runs:detail", args=[fleet["ours"].pk])).content.decode()
    assert "Placed on gpu-1@node" in placed


def test_only_staff_set_quotas(client, alice, team):
    client.force_login(alice)  # a team admin may not raise their own team's limit
    assert client.post(reverse("fleet:set_quota", args=[team.pk]), {"max_gpus": "99"}).status_code == 403
    assert not TeamQuota.objects.filter(pk=team.pk, max_gpus=99).exists()

    operator = get_user_model().objects.create_user("operator", password="x" * 12, is_staff=True)
    client.force_login(operator)
    assert client.get(reverse("fleet:fleet")).context["quotas"] is not None
    response = client.post(reverse("fleet:set_quota", args=[team.pk]), {"max_gpus": "4"}, follow=True)
    assert TeamQuota.objects.get(pk=team.pk).max_gpus == 4
    assert f"Quota of {team.name} saved." in response.content.decode()
    response = client.post(reverse("fleet:set_quota", args=[team.pk]), {"max_gpus": "-3"}, follow=True)
    assert "max_gpus" in response.content.decode() or "whole number" in response.content.decode()
    assert TeamQuota.objects.get(pk=team.pk).max_gpus == 4
    client.post(reverse("fleet:set_quota", args=[team.pk]), {"max_gpus": ""})
    assert TeamQuota.objects.get(pk=team.pk).max_gpus is None
    assert client.post(reverse("fleet:set_quota", args=[999999]), {"max_gpus": "1"}).status_code == 404


def test_a_host_that_shut_down_shows_silent(client, bob, db):
    services.register_host(name="gone@node", queue="q", cpu_slots=4)
    services.host_gone("gone@node")
    client.force_login(bob)
    page = client.get(reverse("fleet:fleet")).content.decode()
    assert "gone@node" in page and "silent" in page and "shut down" in page
    assert Host.objects.get(name="gone@node").heartbeat_at is None
