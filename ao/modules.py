"""Process modules: build from Python source with componentize-py, publish as Type=Module transactions."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings

from ao.effects import keys
from ao.effects.stores import embedded_store
from ao.permaweb import transaction as l1
from ao.units import su

WIT_DIR = Path(__file__).resolve().parent / "wit"
SDK_DIR = Path(__file__).resolve().parent / "sdk"
WORLD = "process"
COMPONENT_FORMAT = "wasm32-wasip2-component"
# Core modules with a 64-bit memory and the ABI of ao.effects.core64 (memory, alloc, handle).
CORE64_FORMAT = "wasm64-core-json-v1"
ENCODING = "JSON-1"
DEFAULT_MODULE_MEMORY_LIMIT = "1-gb"
DEFAULT_MODULE_COMPUTE_LIMIT = str(10_000_000_000)
BUILD_TIMEOUT_S = 600


class ModuleBuildError(RuntimeError):
    """componentize-py could not build the module."""


def source_digest(source_dir: Path) -> str:
    """sha256 over the module's sources, the SDK and the WIT world: the build's identity."""
    digest = hashlib.sha256()
    for root in (source_dir, SDK_DIR, WIT_DIR):
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".py", ".wit"}):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_component(source_dir: Path, *, cache: bool = True) -> bytes:
    """Build a component from a directory holding process_main.py; cached by source digest."""
    if not (source_dir / "process_main.py").is_file():
        raise ModuleBuildError(f"{source_dir} has no process_main.py (it must define `process`)")
    out_dir = Path(settings.AO["BUILD_CACHE"]) / "modules"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source_dir.name}-{source_digest(source_dir)[:16]}.wasm"
    if cache and target.exists():
        return target.read_bytes()
    tool = Path(sys.executable).with_name("componentize-py")
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / "module.wasm"
        proc = subprocess.run(
            [str(tool), "-d", str(WIT_DIR), "-w", WORLD, "componentize", "-p", str(source_dir), "-p", str(SDK_DIR),
             "app", "-o", str(built)],
            capture_output=True, timeout=BUILD_TIMEOUT_S, check=False,
        )
        if proc.returncode != 0:
            raise ModuleBuildError(f"componentize-py failed: {proc.stderr.decode(errors='replace')[-3000:]}")
        data = built.read_bytes()
    target.write_bytes(data)
    return data


def module_tags(
    name: str, extra: Sequence[tuple[str, str]] = (), *, module_format: str = COMPONENT_FORMAT
) -> list[tuple[str, str]]:
    """The tags of a Type=Module transaction."""
    tags = [
        ("Data-Protocol", su.DATA_PROTOCOL),
        ("Variant", su.VARIANT),
        ("Type", "Module"),
        ("Module-Format", module_format),
        ("Input-Encoding", ENCODING),
        ("Output-Encoding", ENCODING),
        ("Memory-Limit", DEFAULT_MODULE_MEMORY_LIMIT),
        ("Compute-Limit", DEFAULT_MODULE_COMPUTE_LIMIT),
        ("Content-Type", "application/wasm"),
        ("Name", name),
    ]
    names = {n for n, _ in extra}
    return [t for t in tags if t[0] not in names or t[0] in ("Data-Protocol", "Type")] + [
        t for t in extra if t[0] not in ("Data-Protocol", "Type")
    ]


def publish_module(
    data: bytes, *, name: str, extra_tags: Sequence[tuple[str, str]] = (), module_format: str = COMPONENT_FORMAT
) -> str:
    """Store a module as a signed L1 transaction of the operator; return its id (reuses an identical one)."""
    store = embedded_store()
    digest = hashlib.sha256(data).hexdigest()
    wallet = keys.operator_wallet()
    for record in store.query(owners=[wallet.address], tags=[("Type", ["Module"]), ("Sha256", [digest])], first=1):
        return record.id
    tags = [*module_tags(name, extra_tags, module_format=module_format), ("Sha256", digest)]
    tx = l1.sign(l1.build(data=data, tags=tags), wallet)
    return store.put_transaction(tx.to_header(include_data=False), data)
