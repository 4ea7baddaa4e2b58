"""Cold model open through WeaveDrive vs from a plain path, measured in one run.

    .venv/bin/python bench/model_open.py            # the default model (its PyPI parts)
    .venv/bin/python bench/model_open.py FILE.gguf  # any GGUF

Plain: llama.cpp loads the file (after its sha256 check). WeaveDrive: the model is an L1
transaction; every chunk is verified against data_root into the local cache, then loaded the
same way. Page caches are warm for both, so this compares the software, not the disk.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _setup import django_ready


def main() -> None:
    django_ready()
    from ao import weave
    from ao.effects.stores import embedded_store
    from ao.extensions import default_model, llm
    from ao.extensions.weavedrive import ChunkCache

    if len(sys.argv) > 1:
        plain_path = Path(sys.argv[1])
        tx_id = weave.weave_upload(path=plain_path, tags=[])
    else:
        plain_path = Path(tempfile.mkdtemp()) / "model.gguf"
        with default_model.open_concatenated() as src, open(plain_path, "wb") as dst:
            shutil.copyfileobj(src, dst, 16 * 1024 * 1024)
        tx_id = weave.weave_upload_default_model()
    sha = llm.file_sha256(plain_path)

    t0 = time.perf_counter()
    llm.LlamaEngine(plain_path, expected_sha256=sha).close()
    plain_s = time.perf_counter() - t0

    cache = ChunkCache(Path(tempfile.mkdtemp()), embedded_store())  # cold: nothing verified yet
    t1 = time.perf_counter()
    local = cache.local_file(tx_id)
    t2 = time.perf_counter()
    llm.LlamaEngine(local, expected_sha256=sha).close()
    t3 = time.perf_counter()
    size_mib = plain_path.stat().st_size / 2**20
    print(json.dumps({
        "model_mib": round(size_mib),
        "plain_open_s": round(plain_s, 3),
        "weavedrive_verify_s": round(t2 - t1, 3),
        "weavedrive_open_s": round(t3 - t1, 3),
        "weavedrive_vs_plain_time_ratio": round((t3 - t1) / plain_s, 3),
        "verify_mib_s": round(size_mib / (t2 - t1)),
    }, indent=2))


if __name__ == "__main__":
    main()
