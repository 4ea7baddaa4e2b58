"""The import contracts of .importlinter hold: one-way layers, no circles, tasks asked for by name, a pure core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache", "--no-logo"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def test_every_import_contract_is_kept() -> None:
    run = _lint(ROOT / ".importlinter")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 4 kept, 0 broken." in run.stdout


def test_the_linter_reports_a_broken_contract(tmp_path: Path) -> None:
    config = tmp_path / "broken.ini"
    config.write_text("[importlinter]\nroot_packages =\n    ao\n\n[importlinter:contract:x]\nname = units without "
                      "permaweb\ntype = forbidden\nsource_modules =\n    ao.units\nforbidden_modules =\n"
                      "    ao.permaweb\n")
    run = _lint(config)
    assert run.returncode != 0 and "BROKEN" in run.stdout
