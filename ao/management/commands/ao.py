"""`manage.py ao init`: create missing keys and publish this scheduler's location."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ao import services


class Command(BaseCommand):
    """AO node administration."""

    help = "AO node administration: `init` creates keys and the Scheduler-Location record."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("init", help="create missing keys; publish the scheduler's location")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "init":
            created, location = services.node_init()
            for path in created:
                self.stdout.write(f"created key {path}")
            self.stdout.write(f"scheduler location {location}")
