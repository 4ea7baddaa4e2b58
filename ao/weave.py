"""Upload files (model weights above all) to the permaweb store as chunked L1 transactions of the operator.

A file is read twice and never held in memory: the first pass computes its sha256 and its
Merkle tree (256 KiB chunks, data_root) together, so the transaction can be signed; the
second streams it into the store, which hashes every chunk again and keeps the data only
if it still matches data_root. An upload is keyed by its ``Sha256`` tag: a file the
operator already stored is not stored again.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from ao.effects import keys
from ao.effects.stores import embedded_store
from ao.errors import AoError
from ao.extensions import default_model
from ao.permaweb import merkle
from ao.permaweb import transaction as l1
from ao.permaweb.store import Invalid

Progress = Callable[[int, int], None]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Python's mimetypes table knows no GGUF.
CONTENT_TYPES_BY_SUFFIX = {".gguf": "application/x-gguf"}
# Python's built-in table only (not the host's /etc/mime.types): the same file gets the same tags everywhere.
_MIME_TYPES = mimetypes.MimeTypes()
# A compressed file (x.tar.gz) is served as its compression, not as what it unpacks to.
CONTENT_TYPES_BY_ENCODING = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}
SHA256_TAG = "Sha256"
CONTENT_TYPE_TAG = "Content-Type"
FILE_NAME_TAG = "File-Name"
MODEL_NAME_TAG = "Model-Name"
# Tags the upload computes itself; a user may not set them.
RESERVED_TAGS = frozenset({SHA256_TAG})
MAX_TAG_NAME_BYTES = 256
MAX_TAG_VALUE_BYTES = 1024
# How many of the operator's uploads of one sha256 to look through for an L1 transaction.
EXISTING_LOOKUP = 100
UPLOAD_PASSES = 2


class WeaveUploadError(AoError):
    """A file that cannot be uploaded (missing, unreadable, changed while read) or bad tags."""


class _Hasher(Protocol):
    """What the reader needs of a hashlib object."""

    def update(self, data: bytes, /) -> None: ...


def content_type_for(name: str) -> str:
    """The Content-Type of a file name: GGUF known, else guessed, else application/octet-stream."""
    suffix = Path(name).suffix.lower()
    if suffix in CONTENT_TYPES_BY_SUFFIX:
        return CONTENT_TYPES_BY_SUFFIX[suffix]
    guessed, encoding = _MIME_TYPES.guess_type(name, strict=False)
    if encoding is not None:
        return CONTENT_TYPES_BY_ENCODING.get(encoding, DEFAULT_CONTENT_TYPE)
    return guessed or DEFAULT_CONTENT_TYPE


def parse_tag(text: str) -> tuple[str, str]:
    """A ("K", "V") pair from "K=V" (the value may contain "="); raise WeaveUploadError on bad input."""
    name, sep, value = text.partition("=")
    if not sep:
        raise WeaveUploadError(f"tag {text!r} must be K=V")
    return name, value


def validate_tags(tags: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """User tags checked: non-empty UTF-8 names, bounded sizes, no reserved names; raise WeaveUploadError."""
    out: list[tuple[str, str]] = []
    for name, value in tags:
        if not isinstance(name, str) or not isinstance(value, str):
            raise WeaveUploadError(f"tag {name!r}={value!r}: name and value must be text")
        if not name.strip():
            raise WeaveUploadError(f"tag {name!r}={value!r}: the name is empty")
        if name in RESERVED_TAGS:
            raise WeaveUploadError(f"tag {name!r} is set by the upload itself and cannot be given")
        try:
            name_size, value_size = len(name.encode("utf-8")), len(value.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise WeaveUploadError(f"tag {name!r}: not valid UTF-8 text ({exc.reason})") from exc
        if name_size > MAX_TAG_NAME_BYTES:
            raise WeaveUploadError(f"tag name {name[:40]!r}... is {name_size} bytes, at most {MAX_TAG_NAME_BYTES}")
        if value_size > MAX_TAG_VALUE_BYTES:
            raise WeaveUploadError(f"tag {name!r}: value is {value_size} bytes, at most {MAX_TAG_VALUE_BYTES}")
        out.append((name, value))
    return out


def _merge_tags(
    defaults: Sequence[tuple[str, str]], user: Sequence[tuple[str, str]], sha256_hex: str
) -> list[tuple[str, str]]:
    """Defaults unless the user set the same name, then the user's tags, then Sha256; checked against L1 limits."""
    given = {name for name, _ in user}
    tags = [t for t in defaults if t[0] not in given] + list(user) + [(SHA256_TAG, sha256_hex)]
    total = sum(len(n.encode()) + len(v.encode()) for n, v in tags)
    if total > l1.MAX_TAGS_BYTES:
        raise WeaveUploadError(
            f"the tags take {total} bytes (names plus values), an L1 transaction allows {l1.MAX_TAGS_BYTES}"
        )
    return tags


def find_upload(sha256_hex: str) -> str | None:
    """The id of an L1 transaction of the operator tagged with this Sha256, if one is stored."""
    wallet = keys.operator_wallet()
    records = embedded_store().query(
        owners=[wallet.address], tags=[(SHA256_TAG, [sha256_hex])], first=EXISTING_LOOKUP
    )
    return next((r.id for r in records if r.kind == "tx"), None)


class _CountingReader:
    """A reader that feeds every block it returns to an optional sha256 and a progress callback."""

    def __init__(
        self, source: BinaryIO, *, digest: _Hasher | None, progress: Progress | None, offset: int, total: int
    ) -> None:
        self.source, self.digest, self.progress = source, digest, progress
        self.done, self.offset, self.total = 0, offset, total

    def read(self, size: int = -1) -> bytes:
        """Read from the source, hashing and reporting what was read."""
        block = self.source.read(size)
        if block:
            if self.digest is not None:
                self.digest.update(block)
            self.done += len(block)
            if self.progress is not None:
                self.progress(self.offset + self.done, self.total)
        return block


def _upload_stream(
    stream: BinaryIO,
    size: int,
    *,
    tags_for: Callable[[str], list[tuple[str, str]]],
    what: str,
    expected_sha256: str | None,
    progress: Progress | None,
    on_existing: Callable[[str], None] | None = None,
) -> str:
    """Hash and chunk ``size`` bytes of a seekable stream, sign, then stream them into the store."""
    total = UPLOAD_PASSES * size
    digest = hashlib.sha256()
    try:
        first_pass = _CountingReader(stream, digest=digest, progress=progress, offset=0, total=total)
        _, tree = merkle.compute_from_stream(first_pass, size)  # type: ignore[arg-type]
        grew = stream.read(1)
    except merkle.ShortReadError as exc:
        raise WeaveUploadError(f"{what} shrank while it was read ({exc})") from exc
    except OSError as exc:
        raise WeaveUploadError(f"cannot read {what}: {exc}") from exc
    if grew:
        raise WeaveUploadError(f"{what} grew while it was read; upload it again once it is complete")
    sha256_hex = digest.hexdigest()
    if expected_sha256 is not None and sha256_hex != expected_sha256:
        raise WeaveUploadError(f"{what} has sha256 {sha256_hex}, expected {expected_sha256}; nothing was stored")
    tags = tags_for(sha256_hex)
    existing = find_upload(sha256_hex)
    if existing is not None:
        if on_existing is not None:
            on_existing(existing)
        return existing
    tx = l1.sign(l1.build(tree=tree, tags=tags), keys.operator_wallet())
    try:
        stream.seek(0)
        return embedded_store().put_transaction(
            tx.to_header(include_data=False),
            _CountingReader(stream, digest=None, progress=progress, offset=size, total=total),  # type: ignore[arg-type]
        )
    except Invalid as exc:
        raise WeaveUploadError(f"{what} changed between the two passes, nothing was stored: {exc}") from exc
    except OSError as exc:
        raise WeaveUploadError(f"cannot read {what}: {exc}") from exc


def weave_upload(
    *,
    path: Path,
    tags: Sequence[tuple[str, str]],
    name: str | None = None,
    progress: Progress | None = None,
    on_existing: Callable[[str], None] | None = None,
) -> str:
    """Store a file as a signed, chunked L1 transaction of the operator; return its id (an existing one if stored)."""
    user_tags = validate_tags(tags)
    if name is not None and not name.strip():
        raise WeaveUploadError("the model name is empty")
    path = Path(path)
    defaults = [(CONTENT_TYPE_TAG, content_type_for(path.name)), (FILE_NAME_TAG, path.name)]
    if name is not None:
        defaults.append((MODEL_NAME_TAG, name))
    _merge_tags(defaults, user_tags, "0" * 64)  # fail on oversized tags before reading gigabytes
    if not path.exists():
        raise WeaveUploadError(f"{path}: no such file")
    if path.is_dir():
        raise WeaveUploadError(f"{path} is a directory; give a file")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, used for both passes
    except OSError as exc:
        raise WeaveUploadError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise WeaveUploadError(f"{path} is not a regular file (a pipe or device has no size to sign)")
        return _upload_stream(
            fh,
            info.st_size,
            tags_for=lambda sha: _merge_tags(defaults, user_tags, sha),
            what=str(path),
            expected_sha256=None,
            progress=progress,
            on_existing=on_existing,
        )


def weave_upload_default_model(
    progress: Progress | None = None, on_existing: Callable[[str], None] | None = None
) -> str:
    """Store the default model (the installed PyPI parts, concatenated) once; return its transaction id."""
    existing = find_upload(default_model.SHA256)
    if existing is not None:
        if on_existing is not None:
            on_existing(existing)
        return existing
    with default_model.open_concatenated() as stream:
        if stream.size != default_model.SIZE:
            raise WeaveUploadError(
                f"the installed parts of {default_model.NAME} add up to {stream.size} bytes, expected "
                f"{default_model.SIZE}: reinstall them with `{default_model.INSTALL_HINT}`"
            )
        tags = [
            (CONTENT_TYPE_TAG, default_model.CONTENT_TYPE),
            (MODEL_NAME_TAG, default_model.NAME),
            ("Model-Format", default_model.MODEL_FORMAT),
            ("Quantization", default_model.QUANTIZATION),
            (FILE_NAME_TAG, default_model.FILE_NAME),
        ]
        return _upload_stream(
            stream,  # type: ignore[arg-type]
            stream.size,
            tags_for=lambda sha: [*tags, (SHA256_TAG, sha)],
            what=f"the default model {default_model.NAME}",
            expected_sha256=default_model.SHA256,
            progress=progress,
            on_existing=on_existing,
        )
