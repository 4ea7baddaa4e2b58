"""`manage.py web rebuild | project | rotate-wallet-keys`: recreate the read models from the log, bring them up to
date, or re-encrypt every custodial wallet under the current secret key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from web import projection, selectors, services
from web.errors import WebError


class Command(BaseCommand):
    """Read model administration."""

    help = ("The site's read models: `rebuild` empties and reprojects them from the log; `project` catches up. "
            "`rotate-wallet-keys` re-encrypts the custodial wallets under DJANGO_SECRET_KEY (after a rotation that "
            "moved the old key to DJANGO_SECRET_KEY_FALLBACKS).")

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        for name, text in (("rebuild", "empty the read models and project the whole log again"),
                           ("project", "apply the results not projected yet")):
            cmd = sub.add_parser(name, help=text)
            cmd.add_argument("--fed", help="the Fed's process id (default: the one this node runs)")
        sub.add_parser("rotate-wallet-keys", help="re-encrypt every custodial wallet under the current secret key")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "rotate-wallet-keys":
            try:
                report = services.wallets_rotate()
            except WebError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"rotate-wallet-keys: {report.rotated} wallets re-encrypted under the current key "
                              f"({report.total} in all); the fallback keys are no longer needed for them")
            return
        fed = options["fed"] or selectors.fed_process_id()
        if fed is None:
            raise CommandError("no Fed on this node: run `manage.py fed bootstrap` or pass --fed")
        if options["action"] == "rebuild":
            count = projection.rebuild(fed_process_id=fed)
        else:
            count = projection.project_fed(fed_process_id=fed)
        self.stdout.write(f"{options['action']}: {count} results applied from the Fed {fed} and its wAR ledger")
