"""Which ledger processes this node runs."""

from __future__ import annotations

from django.db import models


class Token(models.Model):
    """A token ledger process spawned by the bootstrap."""

    ticker = models.CharField(max_length=16, unique=True)
    process_id = models.CharField(max_length=43, unique=True)
    module_id = models.CharField(max_length=43)
    denomination = models.PositiveSmallIntegerField()
    max_supply = models.DecimalField(max_digits=40, decimal_places=0, null=True, help_text="base units")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.ticker} ({self.process_id})"
