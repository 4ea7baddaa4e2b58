"""WeaveDrive: attested data read by range from inside a process, in each availability mode; tampering refused."""

from __future__ import annotations

import json
import random

import pytest

from ao import models, services, verify
from ao.compute import batch, health
from ao.errors import HostFault
from ao.effects import keys
from ao.effects.stores import embedded_store
from ao.extensions import weavedrive
from ao.permaweb import dataitem
from ao.permaweb import transaction as l1
from ao.permaweb.wallet import Ed25519Key, Wallet
from tests import factories
from tests.ao.test_cu import send, spawn

pytestmark = pytest.mark.django_db
KIB = 1024


@pytest.fixture
def blob(rsa_wallet: Wallet, node_keys: None) -> tuple[str, bytes]:
    """A 600 KiB L1 transaction in the store (three chunks)."""
    data = random.Random(7).randbytes(600 * KIB)
    tx = l1.sign(l1.build(data=data, tags=[("Content-Type", "application/octet-stream")]), rsa_wallet)
    return embedded_store().put_transaction(tx.to_header(include_data=False), data), data


def read(owner: Ed25519Key, pid: str, path: str, offset: int = 0, length: int = -1) -> models.Result:
    mid = send(owner, pid, "Weave-Read", Path=path, Offset=str(offset), Length=str(length))
    batch.evaluate_pending(process_id=pid)
    return models.Result.objects.get(process_id=pid, message_id=mid)


def vouch(signer: Ed25519Key | Wallet, pid: str, kind: str, tx_id: str) -> None:
    item = dataitem.create_data_item(
        signer, b"", tags=factories.ao_tags(kind, [("Message", tx_id)]), target=pid, anchor=random.randbytes(32)
    )
    services.su_schedule(raw=item.serialize())


def mine_a_block(wallet: Wallet) -> None:
    """Advance the embedded chain (each stored L1 transaction is mined into a new block)."""
    data = random.randbytes(10)
    tx = l1.sign(l1.build(data=data), wallet)
    embedded_store().put_transaction(tx.to_header(include_data=False), data)


def test_assignments_mode_reads_a_range_once_attested(alice: Ed25519Key, probe_module: str, blob) -> None:  # type: ignore[no-untyped-def]
    tx_id, data = blob
    pid = spawn(alice, probe_module, [("Extension", "WeaveDrive")])
    refused = read(alice, pid, f"/data/{tx_id}", 100, 10)
    assert "refused: no Attestation" in refused.error
    services.su_attest(process_id=pid, tx_id=tx_id)
    services.su_attest(process_id=pid, tx_id=tx_id)  # idempotent
    ok = read(alice, pid, f"/data/{tx_id}", 262_140, 10)  # across the first chunk boundary
    out = json.loads(ok.body["Output"])
    assert out == {"size": len(data), "hex": data[262_140:262_150].hex()}
    assert ok.gas_used > 0


def test_assignments_mode_accepts_listed_attestors_only(alice: Ed25519Key, probe_module: str, blob) -> None:  # type: ignore[no-untyped-def]
    tx_id, data = blob
    attestor, stranger = Ed25519Key.generate(), Ed25519Key.generate()
    pid = spawn(alice, probe_module, [("Extension", "WeaveDrive"), ("Attestor", attestor.address)])
    vouch(stranger, pid, "Attestation", tx_id)
    assert "refused" in read(alice, pid, f"/data/{tx_id}", 0, 4).error
    vouch(attestor, pid, "Attestation", tx_id)
    assert json.loads(read(alice, pid, f"/data/{tx_id}", 0, 4).body["Output"])["hex"] == data[:4].hex()


def test_individual_mode_needs_the_owner(alice: Ed25519Key, probe_module: str, blob) -> None:  # type: ignore[no-untyped-def]
    tx_id, data = blob
    pid = spawn(alice, probe_module, [("Extension", "WeaveDrive"), ("Availability-Type", "Individual")])
    services.su_attest(process_id=pid, tx_id=tx_id)  # a scheduler attestation does not count here
    vouch(Ed25519Key.generate(), pid, "Available", tx_id)
    assert "Availability-Type Individual" in read(alice, pid, f"/data/{tx_id}").error
    vouch(alice, pid, "Available", tx_id)
    assert json.loads(read(alice, pid, f"/data/{tx_id}", 599 * KIB).body["Output"])["hex"] == data[599 * KIB:].hex()


def test_library_mode_follows_the_librarys_log_at_earlier_blocks(
    alice: Ed25519Key, probe_module: str, blob, rsa_wallet: Wallet  # type: ignore[no-untyped-def]
) -> None:
    tx_id, data = blob
    librarian = Ed25519Key.generate()
    library = spawn(librarian, probe_module, [("Name", "library")])
    pid = spawn(alice, probe_module, [("Extension", "WeaveDrive"), ("Availability-Type", "Library"),
                                      ("Library", library)])
    vouch(Ed25519Key.generate(), library, "Available", tx_id)  # not the librarian: ignored
    vouch(librarian, library, "Available", tx_id)
    # Same block as the listing: not yet (a later listing must never change a past decision).
    assert "Availability-Type Library" in read(alice, pid, f"/data/{tx_id}", 0, 8).error
    mine_a_block(rsa_wallet)
    assert json.loads(read(alice, pid, f"/data/{tx_id}", 0, 8).body["Output"])["hex"] == data[:8].hex()


def test_a_local_copy_failing_its_proof_stalls_and_is_never_recorded_or_cached(  # type: ignore[no-untyped-def]
    alice: Ed25519Key, probe_module: str, blob
) -> None:
    tx_id, data = blob
    pid = spawn(alice, probe_module, [("Extension", "WeaveDrive")])
    services.su_attest(process_id=pid, tx_id=tx_id)
    batch.evaluate_pending(process_id=pid)
    before = models.Evaluation.objects.get(process_id=pid)
    entry = models.Entry.objects.get(id=tx_id)
    path = embedded_store().blob_dir / entry.blob
    good = path.read_bytes()
    raw = bytearray(good)
    raw[300 * KIB] ^= 0xFF  # chunk 1 of this node's copy rots on disk
    path.write_bytes(bytes(raw))
    mid = send(alice, pid, "Weave-Read", Path=f"/data/{tx_id}", Offset=str(300 * KIB), Length="16")
    for _ in range(health.STALL_AFTER):
        with pytest.raises(HostFault, match="does not match its proof"):
            batch.evaluate_pending(process_id=pid)
    # A healthy node would read the data: nothing is recorded, the process is shown stalled with the reason.
    assert not models.Result.objects.filter(process_id=pid, message_id=mid).exists()
    after = models.Evaluation.objects.get(process_id=pid)
    assert (after.next_nonce, after.state_hash) == (before.next_nonce, before.state_hash)
    status = health.process_health(pid)
    assert status is not None and status.stalled and "fails its proof against data_root" in status.fault
    cache = weavedrive.chunk_cache()
    assert cache._open[tx_id].verified[1] == 0
    with pytest.raises(HostFault, match="does not match its proof"):
        cache.local_file(tx_id)  # what the LLM extension opens: never served
    path.write_bytes(good)  # the fault is gone (the copy repaired): the same message now reads the real bytes
    batch.evaluate_pending(process_id=pid)
    ok = models.Result.objects.get(process_id=pid, message_id=mid)
    assert json.loads(ok.body["Output"])["hex"] == data[300 * KIB:300 * KIB + 16].hex()
    assert not health.process_health(pid).fault  # type: ignore[union-attr]
    assert verify.verify_process(process_id=pid).ok  # what a clean replay records


def test_headers_blocks_and_disabled_drive(alice: Ed25519Key, probe_module: str, blob) -> None:  # type: ignore[no-untyped-def]
    tx_id, _ = blob
    pid = spawn(alice, probe_module, [("Extension", "WeaveDrive")])
    services.su_attest(process_id=pid, tx_id=tx_id)
    header = read(alice, pid, f"/tx/{tx_id}")
    assert bytes.fromhex(json.loads(header.body["Output"])["hex"]).decode().startswith('{"data":')
    block = read(alice, pid, "/block/0")
    assert json.loads(bytes.fromhex(json.loads(block.body["Output"])["hex"]))["height"] == 0
    assert "after this message's block height" in read(alice, pid, "/block/99").error
    assert "not a WeaveDrive path" in read(alice, pid, "/etc/passwd").error
    plain = spawn(alice, probe_module)
    assert "not enabled" in read(alice, plain, f"/data/{tx_id}").error
    assert keys.scheduler_key().address


def test_attest_command(alice: Ed25519Key, probe_module: str, blob) -> None:  # type: ignore[no-untyped-def]
    import io

    from django.core.management import CommandError, call_command

    tx_id, _ = blob
    pid = spawn(alice, probe_module, [("Extension", "WeaveDrive")])
    out = io.StringIO()
    call_command("weave", "attest", f"--process={pid}", "--", tx_id, stdout=out)  # ids may start with "-"
    assert f"attested {tx_id} to {pid} at nonce 1" in out.getvalue()
    with pytest.raises(CommandError, match="not in this node's store"):
        call_command("weave", "attest", f"--process={pid}", "--", "Q" * 43)
    with pytest.raises(CommandError, match="no process"):
        call_command("weave", "attest", "--process=" + "P" * 43, "--", tx_id)


def test_a_store_outage_is_retried_not_recorded(alice: Ed25519Key, probe_module: str, blob,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ao.errors import HostUnavailable
    from ao.permaweb.store import StoreUnavailable

    tx_id, data = blob
    pid = spawn(alice, probe_module, [("Extension", "WeaveDrive")])
    services.su_attest(process_id=pid, tx_id=tx_id)
    batch.evaluate_pending(process_id=pid)
    evaluated = models.Evaluation.objects.get(process_id=pid)
    store = weavedrive.chunk_cache().store

    def unreachable(*args: object, **kwargs: object) -> bytes:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(store, "read", unreachable)
    monkeypatch.setattr(store, "read_into", unreachable)  # what the chunk cache calls
    mid = send(alice, pid, "Weave-Read", Path=f"/data/{tx_id}", Offset="5", Length="7")
    with pytest.raises(HostUnavailable, match="connection refused"):
        batch.evaluate_pending(process_id=pid)
    # Nothing about the message was recorded: no result, the cursor and state hash did not move.
    assert not models.Result.objects.filter(process_id=pid, message_id=mid).exists()
    assert models.Evaluation.objects.get(process_id=pid).next_nonce == evaluated.next_nonce
    assert models.Evaluation.objects.get(process_id=pid).state_hash == evaluated.state_hash
    monkeypatch.undo()
    batch.evaluate_pending(process_id=pid)  # the retry, once the store answers again
    ok = models.Result.objects.get(process_id=pid, message_id=mid)
    assert json.loads(ok.body["Output"])["hex"] == data[5:12].hex()
