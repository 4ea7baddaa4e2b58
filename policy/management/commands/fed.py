"""`manage.py fed bootstrap [--model-tx TX] [--tag K=V]`: spawn the Llama Fed (and wAR, LLAMA if missing);
`manage.py fed id`: print the running Fed's process id (for `manage.py ao verify "$(manage.py fed id)"`)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ao.errors import AoError
from ao.extensions.default_model import DefaultModelError
from policy import services
from policy.models import Fed


def _tag(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CommandError(f"--tag takes NAME=VALUE, got {text!r}")
    return name, value


class Command(BaseCommand):
    """Fed administration."""

    help = ("The Llama Fed: `bootstrap` builds its module, spawns it, attests its model, lets it grant LLAMA; "
            "`id` prints its process id.")

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        boot = sub.add_parser("bootstrap", help="spawn the Fed once (idempotent)")
        boot.add_argument("--model-tx",
                          help="transaction id of the GGUF the governors run (default: the default model)")
        boot.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE",
                          help="a spawn parameter for a new Fed (Schedule, Epoch-Budget, Governors, ...)")
        sub.add_parser("id", help="print the running Fed's process id")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "id":
            fed = Fed.objects.order_by("id").first()  # the one the site shows (web.selectors.fed_process_id)
            if fed is None:
                raise CommandError("no Fed on this node yet: run `manage.py fed bootstrap` (scripts/run does)")
            self.stdout.write(fed.process_id)
            return
        overrides = dict(_tag(t) for t in options["tag"])
        self.stderr.write("building the modules (componentize-py; cached) and spawning the Fed")
        try:
            fed = services.fed_bootstrap(model_tx=options["model_tx"], overrides=overrides or None)
        except (AoError, DefaultModelError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Fed: process {fed.process_id} (module {fed.module_id}, model {fed.model_tx})")
