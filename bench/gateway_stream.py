"""A large blob through GET /ao/gateway/{id}: the web worker's peak memory and speed beside a plain read (JSON).

    .venv/bin/python bench/gateway_stream.py [MiB=1024] [--port 8767]

Set-up, in a fresh data dir (SQLite, or DATABASE_URL's PostgreSQL): a file of MiB random bytes uploaded as an L1
transaction (chunked, every chunk with its Merkle proof). Then one gunicorn sync worker serves it; the client reads
the body in 1 MiB pieces and throws them away. Printed: the worker's peak resident memory (VmHWM) before and after
the download and its growth as a share of the blob (a server that read the blob whole would grow by about its
size), the served MiB/s with every chunk verified, and the same run's plain file read of the blob as a baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import _setup  # noqa: E402
from submit_load import _start, _stop, _wait_for_port  # noqa: E402

PIECE = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mib", nargs="?", type=int, default=1024)
    parser.add_argument("--port", type=int, default=8767)
    args = parser.parse_args()
    _setup.django_ready()
    from ao import weave

    blob = Path(tempfile.mkdtemp()) / "blob.bin"
    with open(blob, "wb") as fh:
        for _ in range(args.mib):
            fh.write(os.urandom(PIECE))
    started = time.perf_counter()
    tx = weave.weave_upload(path=blob, tags=[])
    upload_s = time.perf_counter() - started
    print(f"set-up: {args.mib} MiB uploaded as {tx} in {upload_s:.1f} s", file=sys.stderr)
    plain_s = _plain_read(blob)
    web = _start(["gunicorn", "llamafed.wsgi", "-w", "1", "-b", f"127.0.0.1:{args.port}", "--timeout", "600"],
                 "gunicorn-stream")
    try:
        _wait_for_port(args.port)
        report = _download(f"http://127.0.0.1:{args.port}/ao/gateway/{tx}", web.pid, blob.stat().st_size)
    finally:
        _stop(web)
    report["plain_read_mib_s"] = round(args.mib / plain_s, 1)
    report["served_vs_plain_read"] = round(report["served_mib_s"] / report["plain_read_mib_s"], 3)
    report["blob_mib"] = args.mib
    print(json.dumps(report, indent=2))


def _plain_read(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb") as fh:
        while fh.read(PIECE):
            pass
    return time.perf_counter() - started


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def _download(url: str, master: int, size: int) -> dict[str, object]:
    import requests

    requests.get(url, headers={"Range": "bytes=0-1023"}, timeout=60).raise_for_status()  # warm: imports, connections
    worker = _worker_pid(master)
    before = _peak_rss_mib(worker)
    received = 0
    started = time.perf_counter()
    with requests.get(url, stream=True, timeout=600) as response:
        response.raise_for_status()
        for piece in response.iter_content(PIECE):
            received += len(piece)
    seconds = time.perf_counter() - started
    after = _peak_rss_mib(worker)
    if received != size:
        raise RuntimeError(f"received {received} bytes of {size}")
    return {"worker_peak_rss_mib_before": round(before, 1), "worker_peak_rss_mib_after": round(after, 1),
            "peak_rss_growth_mib": round(after - before, 1),
            "peak_rss_growth_vs_blob": round((after - before) / (size / PIECE), 4),
            "served_mib_s": round(size / PIECE / seconds, 1), "seconds": round(seconds, 1)}


if __name__ == "__main__":
    main()
