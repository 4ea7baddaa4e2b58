"""`manage.py ledger bootstrap`: build the token ledger module and spawn wAR and LLAMA."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ledger import services


class Command(BaseCommand):
    """Token ledger administration."""

    help = "Token ledgers: `bootstrap` builds the module and spawns wAR and LLAMA (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("bootstrap", help="build the ledger module and spawn wAR and LLAMA")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stderr.write("building and publishing the ledger module (componentize-py; cached after the first run)")
        for token in services.ledger_bootstrap():
            self.stdout.write(f"{token.ticker}: process {token.process_id} (module {token.module_id})")
