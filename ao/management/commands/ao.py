"""`manage.py ao init`: create missing keys and publish this scheduler's location."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ao import services
from ao.errors import AoError


class Command(BaseCommand):
    """AO node administration."""

    help = ("AO node administration: init, module, evaluate, status, verify. Ids may start with '-': "
            "put `--` before them (manage.py ao verify -- -AbC...).")

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("init", help="create missing keys; publish the scheduler's location")
        verify = sub.add_parser("verify", help="replay a process's log and compare every result and state hash")
        verify.add_argument("process", help="process id")
        verify.add_argument("--remote", metavar="URL",
                            help="verify a process of the node at URL (its public endpoints only) with this node's "
                                 "own compute unit; this node's database needs none of it")
        verify.add_argument("--shallow", action="store_true",
                            help="only this process, not the processes whose messages it accepted")
        evaluate = sub.add_parser("evaluate", help="evaluate pending messages now (one process, or --all)")
        evaluate.add_argument("process", nargs="?", help="process id")
        evaluate.add_argument("--all", action="store_true", help="every process with unevaluated messages")
        status = sub.add_parser("status", help="each process's compute status: evaluated, pending, faults, stalled")
        status.add_argument("process", nargs="?", help="process id (default: every process)")
        module = sub.add_parser("module", help="build a process module from Python source and publish it")
        module.add_argument("source", help="directory holding process_main.py")
        module.add_argument("--name", help="Name tag (default: the directory name)")
        module.add_argument("--tag", action="append", default=[], metavar="K=V", help="extra module tag")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "verify":
            self._verify(options["process"], options["shallow"], options["remote"])
        elif action == "evaluate":
            self._evaluate(options["process"], options["all"])
        elif action == "status":
            self._status(options["process"])
        elif action == "module":
            self._module(options["source"], options["name"], options["tag"])
        elif action == "init":
            created, location = services.node_init()
            for path in created:
                self.stdout.write(f"created key {path}")
            self.stdout.write(f"scheduler location {location}")

    def _verify(self, process_id: str, shallow: bool, remote: str | None) -> None:
        """Verify the process, then every process whose outbox entries it accepted as their word (unless shallow)."""
        from ao import remote as remote_verify, verify

        if remote:
            try:
                node = remote_verify.RemoteNode(remote)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"verifying {process_id} of {node.base} here, from its public endpoints")

            def run(pid: str, progress: Any) -> Any:
                return remote_verify.verify_remote(url=remote, process_id=pid, node=node, progress=progress)
        else:
            def run(pid: str, progress: Any) -> Any:
                return verify.verify_process(process_id=pid, progress=progress)

        todo, done, failed = [process_id], set(), []
        while todo:
            pid = todo.pop(0)
            done.add(pid)
            report, line = self._verify_one(run, pid)
            if not report.ok:
                failed.append(line)
            if not shallow:
                todo += sorted(report.sources - done - set(todo))
        if failed:
            raise CommandError("\n".join([*failed, f"{len(failed)} of {len(done)} processes did not verify"]))

    def _verify_one(self, run: Any, process_id: str) -> tuple[Any, str]:
        def progress(done: int, total: int) -> None:
            self.stderr.write(f"  {process_id[:8]}: replayed {done}/{total}")

        try:
            report = run(process_id, progress)
        except AoError as exc:
            raise CommandError(str(exc)) from exc
        rate = report.checked / report.seconds if report.seconds else 0.0
        pending = f"; {report.pending} scheduled messages not evaluated yet" if report.pending else ""
        engines = f"; LLM engine {', '.join(sorted(report.engines))}" if report.engines else ""
        if report.ok:
            compared = "every result, state hash and state row" if report.state_compared else (
                "every result and state hash")
            line = (f"OK {process_id}: {report.checked} messages replayed, {compared} matches "
                    f"({report.seconds:.2f} s, {rate:.0f} msg/s){pending}{engines}")
            self.stdout.write(line)
        elif report.fault:
            line = f"NOT VERIFIED {process_id}: {report.fault}"
        else:
            d = report.divergence
            line = (f"DIVERGED {process_id} at nonce {d.nonce} ({d.what}) after {report.checked} matching messages\n"
                    f"  recorded: {d.recorded}\n  replayed: {d.replayed}")
        return report, line

    def _evaluate(self, process_id: str | None, every: bool) -> None:
        from ao import models
        from ao.compute import batch

        if every == bool(process_id):
            raise CommandError("give a process id or --all, not both")
        ids = [process_id] if process_id else list(models.Process.objects.values_list("id", flat=True))
        for pid in ids:
            report = batch.evaluate_process(process_id=pid, budget_s=None, force=True)
            if report.busy:
                self.stderr.write(f"{pid}: another worker is evaluating it")
            if report.fault:
                self.stderr.write(f"{pid}: not evaluated, a fault of this node (retried later): {report.fault}")
            if report.evaluated:
                self.stdout.write(f"{pid}: evaluated {report.evaluated}")

    def _status(self, process_id: str | None) -> None:
        from ao.compute import health

        rows = [health.process_health(process_id)] if process_id else health.all_health()
        if process_id and rows[0] is None:
            raise CommandError(f"no process {process_id} here")
        stalled = 0
        for h in rows:
            assert h is not None
            line = (f"{h.process_id}  {h.state:<10}  evaluated {h.evaluated}/{h.scheduled}  "
                    f"pending pushes {h.pending_pushes}")
            if h.fault:
                since = h.fault_since.isoformat(timespec="seconds") if h.fault_since else "?"
                retry = h.retry_at.isoformat(timespec="seconds") if h.retry_at else "?"
                line += f"\n    fault x{h.fault_count} since {since}, next try {retry}: {h.fault}"
            stalled += h.stalled
            self.stdout.write(line)
        if stalled:
            raise CommandError(f"{stalled} process(es) stalled")

    def _module(self, source: str, name: str | None, tags: list[str]) -> None:
        from pathlib import Path

        from ao import modules

        extra = []
        for tag in tags:
            key, sep, value = tag.partition("=")
            if not sep or not key:
                raise CommandError(f"--tag {tag!r} must be K=V")
            extra.append((key, value))
        path = Path(source).resolve()
        self.stderr.write(f"building {path} with componentize-py ...")
        try:
            wasm = modules.build_component(path)
        except modules.ModuleBuildError as exc:
            raise CommandError(str(exc)) from exc
        module_id = modules.publish_module(wasm, name=name or path.name, extra_tags=extra)
        self.stdout.write(module_id)
