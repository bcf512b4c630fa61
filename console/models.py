"""What the console keeps of its own: the figures of /metrics folded over a history that no longer changes."""

from __future__ import annotations

from django.db import models


class MetricsFold(models.Model):
    """One row: the totals over events, ended leases and finished handoff phases that /metrics no
    longer recounts.

    `figures` holds, for events, the id up to which they are counted and the count per type; for
    leases, per GPU the arrival below which every lease is counted, the counts by state and the
    queue-wait histogram of those leases; for phase records, the id below which every record is
    counted, their duration and reclaim histograms by labels and the refused releases by reason.
    `version` goes up with every fold (console/metrics.py).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.PositiveBigIntegerField(default=0)
    figures = models.JSONField(default=dict)

    class Meta:
        verbose_name = "metrics fold"

    def __str__(self) -> str:
        return f"metrics fold v{self.version}"
