"""Run the reference JavaScript implementations (tests/interop) from the test suite."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

INTEROP_DIR = Path(__file__).parent / "interop"
NODE_TIMEOUT_S = 120


class NodeScriptError(RuntimeError):
    """A reference script failed."""


def run_node(script: str, payload: Any) -> Any:
    """Run tests/interop/<script> with JSON on stdin; return its JSON stdout."""
    node = shutil.which("node")
    if node is None:
        raise NodeScriptError("node is not installed; the README set-up installs it")
    if not (INTEROP_DIR / "node_modules").is_dir():
        raise NodeScriptError(f"run `npm ci` in {INTEROP_DIR} (the README test command does)")
    proc = subprocess.run(
        [node, str(INTEROP_DIR / script)],
        input=json.dumps(payload).encode(),
        capture_output=True,
        cwd=INTEROP_DIR,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise NodeScriptError(f"{script} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return json.loads(proc.stdout)
