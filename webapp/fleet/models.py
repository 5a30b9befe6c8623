"""The fleet: worker hosts, their GPUs and utilisation, where each queued run is placed, team quotas.

A worker registers its host (``workers.fleet``) and beats while it lives; the scheduler
(``workers.scheduler``) reads free capacity from ``Host.reserved`` and writes each decision
as a conditional UPDATE (``webapp.fleet.services``), so several schedulers can run at once.
"""

from __future__ import annotations

from django.db import models

from webapp.accounts.models import Team
from webapp.runs.models import Run


class Host(models.Model):
    """One worker: the name Celery knows it by, the queue only it consumes, what it can hold."""

    name = models.CharField(max_length=200, unique=True)
    queue = models.CharField(max_length=200)
    # Where other hosts reach this one: the rendezvous of a multi-node run whose first node it is.
    address = models.CharField(max_length=200, blank=True)
    cpu_slots = models.PositiveIntegerField(default=0)  # CPU processes it runs where it has no GPU
    reserved = models.PositiveIntegerField(default=0)  # GPUs (or CPU slots) the scheduler has placed
    registered_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # None: shut down cleanly

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Gpu(models.Model):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="gpus")
    index = models.CharField(max_length=40)  # the id the lease and CUDA_VISIBLE_DEVICES use
    model = models.CharField(max_length=100, blank=True)
    memory_mb = models.PositiveIntegerField(default=0)
    # The run whose trainer holds its lease now, as the host's last beat read its lock file.
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["host", "index"]
        constraints = [models.UniqueConstraint(fields=["host", "index"], name="unique_host_gpu")]


class HostSample(models.Model):
    """One heartbeat's utilisation of a host, compact: a list per metric, one value per GPU.

    ``values``: ``{"util": [0.97, 0.12], "mem_mb": [...], "power_w": [...]}``, or
    ``{"cpu": 0.4}`` on a host without GPUs. Kept for ``SAMPLE_KEEP_HOURS``.
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="samples")
    time = models.DateTimeField()
    values = models.JSONField()

    class Meta:
        indexes = [models.Index(fields=["host", "time"], name="fleet_sample_host_time")]


class Kind(models.TextChoices):
    GPU = "gpu", "GPUs"
    SLOT = "slot", "CPU slots"


class Placement(models.Model):
    """A managed run's place in the fleet's queue, and, once placed, the host that holds it.

    ``host`` is None while it waits (``reason`` says why; its position is read from the queue
    order, ``webapp.fleet.selectors.queue_position``, not stored: one placement would move them all);
    ``released_at`` is set once the run ended and its GPUs went back to the host.

    A multi-node run (``launcher.nodes`` > 1) asks for ``count`` on each of ``nodes`` hosts:
    ``host`` is its first node (node rank 0, whose worker supervises the run), the others
    are its ``shares`` (``NodeShare``), all reserved in one transaction. ``master_addr`` and
    ``master_port`` are the rendezvous the first node's supervisor chose for the attempt.
    """

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="placement")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="placements")
    priority = models.PositiveSmallIntegerField(default=0)
    submitted_at = models.DateTimeField()
    kind = models.CharField(max_length=4, choices=Kind.choices)
    count = models.PositiveIntegerField()
    gpu_model = models.CharField(max_length=100, blank=True)
    host_name = models.CharField(max_length=200, blank=True)  # asked for (resources.host)
    host = models.ForeignKey(
        Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="placements"
    )
    placed_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    nodes = models.PositiveIntegerField(default=1)  # hosts; count is per host
    master_addr = models.CharField(max_length=200, blank=True)
    master_port = models.PositiveIntegerField(null=True, blank=True)

    @property
    def total(self) -> int:
        """GPUs (or CPU slots) over all its nodes: what the team's quota counts."""
        return self.count * self.nodes

    class Meta:
        indexes = [
            models.Index(fields=["-priority", "submitted_at", "run"], name="fleet_queue_order"),
            models.Index(fields=["host", "released_at"], name="fleet_placed_on_host"),
        ]


class ShareState(models.TextChoices):
    PLACED = "placed", "placed"  # reserved; its launch not sent yet
    SENT = "sent", "sent"  # the first node sent its launch for ``attempt``
    RUNNING = "running", "running"
    COMPLETED = "completed", "completed"  # its ranks exited 0
    FAILED = "failed", "failed"  # its ranks failed, or it could not start (``error`` says why)
    LOST = "lost", "lost"  # its worker shut down or was interrupted: the run is lost, not failed


SHARE_ENDED = (ShareState.COMPLETED, ShareState.FAILED, ShareState.LOST)


class NodeShare(models.Model):
    """One more host's share of a multi-node run (node ranks 1..N-1; rank 0 is ``Placement.host``).

    The scheduler writes the row with its host when it places the run; the first node's
    supervisor sends the share's launch for its attempt; that host's share supervisor
    (``workers.nodes``) beats ``heartbeat_at`` while its ranks run, stops them on
    ``stop_requested`` or when the attempt is no longer live, and writes how they ended.
    """

    placement = models.ForeignKey(Placement, on_delete=models.CASCADE, related_name="shares")
    node_rank = models.PositiveSmallIntegerField()
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="shares")
    attempt = models.PositiveIntegerField(default=0)  # the run's attempt it was sent for; 0: not yet
    state = models.CharField(max_length=10, choices=ShareState.choices, default=ShareState.PLACED)
    sent_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    stop_requested = models.BooleanField(default=False)  # the first node's trainer ended: stop ours
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["placement", "node_rank"]
        constraints = [models.UniqueConstraint(fields=["placement", "node_rank"], name="unique_share_rank")]


class TeamQuota(models.Model):
    """What a team holds now (``in_use``) and may hold at once (``max_gpus``; None: no limit).

    One row per team that ever had a run placed: every placement and release moves
    ``in_use`` by a conditional UPDATE, so the limit holds with several schedulers.
    """

    team = models.OneToOneField(Team, on_delete=models.CASCADE, primary_key=True, related_name="quota")
    max_gpus = models.PositiveIntegerField(null=True, blank=True)
    in_use = models.PositiveIntegerField(default=0)
