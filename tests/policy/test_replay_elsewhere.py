"""A recorded governor's completion replays bit for bit on other CPU models (qemu-x86_64 user emulation): the canonical
engine is built for one instruction-set level, so the logits are a function of the binary, not of the machine."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ao.extensions import llm
from tests.policy.test_fed import (GOVERNORS, PROCESS_DIR, make_fed, petition, results_of, settle, tiny_model,
                                   user_with_war)
from tests.support.tiny_gguf import tiny_gguf_path
from tests.workers import ROOT

__all__ = ["tiny_model"]
pytestmark = [pytest.mark.heavy, pytest.mark.django_db]
CPUS = ("Haswell", "EPYC")  # x86-64-v3 without AVX-512: Intel 2013 and AMD Zen 1
PROBE = ROOT / "tests" / "support" / "engine_probe.py"


def _probe(model: Path, request: Path, cpu: str | None) -> dict:
    command = [str(ROOT / ".venv" / "bin" / "python"), str(PROBE), str(model), str(request)]
    if cpu is not None:
        command = ["qemu-x86_64", "-cpu", cpu, *command]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cpu or 'this CPU'}: exit {done.returncode}\n{done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_installed_engine_is_the_canonical_build() -> None:
    assert llm.canonical_engine(), llm.engine_fingerprint()
    assert "AVX512" not in llm.engine_fingerprint() and " AVX2 " in llm.engine_fingerprint()


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs Debian's qemu-user (scripts/test installs it)")
def test_a_recorded_decision_replays_bit_for_bit_on_other_cpus(tiny_model: str, tmp_path: Path) -> None:
    fed = make_fed(tiny_model).process_id
    user = user_with_war()
    settle()
    petition(user, fed, "I taught my neighbours to mend their bicycles.")
    settle()
    deliberations = results_of(fed, "Deliberate")
    assert len(deliberations) == len(GOVERNORS)
    [call] = deliberations[0].body["Calls"]
    assert call["params"]["engine"] == llm.engine_fingerprint() and call["logits_sha256"]

    # The request, rebuilt from the call record and the Fed's own prompt module (checked against the recorded hashes).
    sys.path.insert(0, str(PROCESS_DIR))
    try:
        import prompts  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(PROCESS_DIR))
    vote = call["request"]
    first_governor = "grade-first", "A"  # TEST_PARAMS' first governor
    prefix = prompts.prefix_parts(*first_governor)
    grammar = prompts.GRAMMARS[first_governor[0]]
    assert hashlib.sha256("".join(t for t, _ in prefix).encode()).hexdigest() == vote["prefix"]["sha256"]
    assert hashlib.sha256(grammar.encode()).hexdigest() == vote["grammar_sha256"]
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"prefix": prefix, "parts": [[p["text"], p["special"]] for p in vote["parts"]],
                                   "grammar": grammar, "max_tokens": vote["max_tokens"]}))
    model = tiny_gguf_path(tmp_path)  # the same bytes as the uploaded model (the generator is seeded)
    assert llm.file_sha256(model) == call["model"]["sha256"]

    here = _probe(model, request, None)
    assert (here["text"], here["logits_sha256"]) == (call["output"], call["logits_sha256"])
    for cpu in CPUS:
        there = _probe(model, request, cpu)
        assert there["tokens"] == here["tokens"], cpu
        assert there["logits_sha256"] == call["logits_sha256"], f"{cpu}: the logits differ from the recorded ones"
