"""The README's commands are true: every `manage.py` line in it names a command and arguments that command takes,
and manage.py reads the checkout's .env by itself, so the lines run as written on a fresh clone."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SAMPLE_ID = "x" * 43
# What the README's placeholders stand for, as a user would type them.
PLACEHOLDERS = {"PROCESS": SAMPLE_ID, "TX": SAMPLE_ID, "P": SAMPLE_ID, "URL": "http://127.0.0.1:8000",
                "DIR": "ledger/process", "FILE": "README.md", "N": "name", "K=V": "K=V", "NAME": "alice",
                "ADDRESS": "127.0.0.1"}


def _invocations() -> list[str]:
    """Every `manage.py ...` in the README: the rest of its line, up to a comment or a closing backtick."""
    found = []
    for match in re.finditer(r"manage\.py((?: [^`#\n]*)?)", README):
        text = match.group(1).strip()
        text = re.sub(r'"\$\(.*?\)"', SAMPLE_ID, text)  # a command substitution gives an id
        text = re.sub(r"\[[^\]]*\]", "", text).split(" | ")[0]  # optional parts out; the first alternative
        if text and not text.startswith(")"):
            found.append(text)
    return sorted(set(found))


@pytest.mark.parametrize("line", _invocations())
def test_every_manage_py_line_of_the_readme_is_a_command_that_parses(line: str) -> None:
    words = [PLACEHOLDERS.get(w, w) for w in shlex.split(line)]
    name, args = words[0], words[1:]
    commands = get_commands()
    assert name in commands, f"README names `manage.py {name}`, which is not a command"
    parser = load_command_class(commands[name], name).create_parser("manage.py", name)
    try:
        parser.parse_args(args)
    except SystemExit as exc:  # argparse's way to refuse
        pytest.fail(f"`manage.py {line}` does not parse ({exc})")


def test_manage_py_reads_the_checkouts_env_file_by_itself(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"DJANGO_SECRET_KEY={'s' * 48}\nLLAMAFED_DATA_DIR={tmp_path / 'var'}\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LLAMAFED_", "DATABASE_URL"))}

    def manage(*args: str, env_path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                              env={**clean, "LLAMAFED_ENV_FILE": str(env_path)}, timeout=120)

    checked = manage("check", env_path=env_file)
    assert checked.returncode == 0, checked.stderr
    missing = manage("check", env_path=tmp_path / "absent.env")
    assert missing.returncode != 0 and "DJANGO_SECRET_KEY is required" in missing.stderr
