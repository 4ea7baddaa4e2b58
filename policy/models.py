"""Which Fed process this node runs."""

from __future__ import annotations

from django.db import models


class Fed(models.Model):
    """The Fed process spawned by the bootstrap."""

    process_id = models.CharField(max_length=43, unique=True)
    module_id = models.CharField(max_length=43)
    model_tx = models.CharField(max_length=43, help_text="the GGUF the governors run (/data/<model_tx>)")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Fed {self.process_id} (model {self.model_tx})"
