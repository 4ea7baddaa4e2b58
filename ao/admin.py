"""Admin for operators: the compute unit's status of every process (stalled ones first) and its pushes, read-only.

Nothing here can change a log, a result or a cursor: history is the signed log and its evaluation.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from ao import models


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.Evaluation)
class ComputeStatusAdmin(_ReadOnly):
    """Each process's cursor, lease, queue marks and host fault (a stalled process shows its reason)."""

    list_display = ("process_id", "status", "next_nonce", "scheduled", "fault_count", "stalled_at", "fault_short",
                    "lease_holder", "updated_at")
    list_filter = (("stalled_at", admin.EmptyFieldListFilter),)
    search_fields = ("process__id", "fault")
    ordering = ("-stalled_at", "-fault_count", "process_id")
    list_select_related = ("process",)

    @admin.display(description="state")
    def status(self, row: models.Evaluation) -> str:
        if row.stalled_at:
            return "stalled"
        if row.fault:
            return "retrying"
        return "behind" if row.next_nonce < row.process.next_nonce else "current"

    @admin.display(description="in log")
    def scheduled(self, row: models.Evaluation) -> int:
        return row.process.next_nonce

    @admin.display(description="fault")
    def fault_short(self, row: models.Evaluation) -> str:
        return row.fault[:160]


@admin.register(models.Push)
class PushAdmin(_ReadOnly):
    """Outbox messages and how their delivery went."""

    list_display = ("process_id", "nonce", "index", "target", "state", "attempts", "error", "created_at",
                    "delivered_at")
    list_filter = ("state",)
    search_fields = ("process__id", "target", "item_id")
    exclude = ("raw",)
