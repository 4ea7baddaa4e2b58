"""Admin: the read models and audit rows, read-only (they change only through projection and services)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from web import models


class ReadOnlyAdmin(admin.ModelAdmin):
    """Browse and search only: nobody edits a projection or an audit row by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VoteInline(admin.TabularInline):
    """A petition's votes."""

    model = models.Vote
    fields = ("governor_index", "governor", "grade", "veto", "valid", "reason", "voted_at")
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.Petition)
class PetitionAdmin(ReadOnlyAdmin):
    """Projected petitions."""

    list_display = ("id", "sender_name", "petitioner", "status", "grade", "amount", "submitted_at", "decided_at")
    list_filter = ("status",)
    search_fields = ("id", "petitioner", "sender_name", "text")
    readonly_fields = ("audit_trace",)
    inlines = [VoteInline]

    @admin.display(description="audit")
    def audit_trace(self, petition: models.Petition) -> str:
        """A link to the petition's full trace through the Fed's log."""
        return format_html('<a href="{}">full trace and replay-verify</a>',
                           reverse("web:audit-petition", args=[petition.id]))


@admin.register(models.Vote)
class VoteAdmin(ReadOnlyAdmin):
    """Projected votes."""

    list_display = ("petition", "governor_index", "governor", "grade", "valid", "voted_at")
    search_fields = ("petition__id", "governor", "reason")


@admin.register(models.Grant)
class GrantAdmin(ReadOnlyAdmin):
    """Projected grants."""

    list_display = ("petition", "recipient", "amount", "status", "decided_at", "confirmed_at")
    list_filter = ("status",)
    search_fields = ("petition__id", "recipient")


@admin.register(models.Projection)
class ProjectionAdmin(ReadOnlyAdmin):
    """Projection cursors."""

    list_display = ("process_id", "next_nonce", "updated_at")


@admin.register(models.PetitionRequest)
class PetitionRequestAdmin(ReadOnlyAdmin):
    """Petitions sent through the site."""

    list_display = ("message_id", "user", "petitioner", "sender_name", "source", "created_at")
    list_filter = ("source",)
    search_fields = ("message_id", "petitioner", "user__username")


@admin.register(models.FaucetDrip)
class FaucetDripAdmin(ReadOnlyAdmin):
    """Faucet drips."""

    list_display = ("user", "address", "amount", "message_id", "created_at")
    search_fields = ("user__username", "address", "message_id")


@admin.register(models.CustodialWallet)
class CustodialWalletAdmin(ReadOnlyAdmin):
    """Custodial wallets: address and export audit only, never the sealed key."""

    list_display = ("user", "address", "created_at", "export_count", "exported_at")
    fields = ("user", "address", "created_at", "export_count", "exported_at")
    search_fields = ("user__username", "address")


@admin.register(models.LinkedAddress)
class LinkedAddressAdmin(ReadOnlyAdmin):
    """Addresses accounts proved control of."""

    list_display = ("user", "address", "proof", "created_at")
    search_fields = ("user__username", "address")
