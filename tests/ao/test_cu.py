"""The compute unit: processes written in Python, run as WebAssembly, deterministic, exactly once."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ao import verify, models, services
from ao.compute import batch, health, pushes
from ao.errors import HostFault
from ao.effects import keys
from ao.permaweb import dataitem
from ao.permaweb.wallet import Ed25519Key
from ao.units import cu, su
from tests import factories

pytestmark = pytest.mark.django_db


def spawn(owner: Ed25519Key, module: str, extra: Sequence[tuple[str, str]] = ()) -> str:
    item = factories.spawn_item(owner, module=module, extra=extra)
    services.su_schedule(raw=item.serialize())
    return item.id


def send(owner: Ed25519Key, pid: str, action: str, data: str = "", **tags: str) -> str:
    item = factories.message_item(owner, pid, action=action, data=data.encode(), extra=list(tags.items()))
    services.su_schedule(raw=item.serialize())
    return item.id


def result(pid: str, message_id: str) -> models.Result:
    batch.evaluate_pending(process_id=pid)
    return models.Result.objects.get(process_id=pid, message_id=message_id)


def state(pid: str) -> dict[str, str]:
    return {e.key: e.value for e in models.StateEntry.objects.filter(process_id=pid)}


def tags_of(message: dict) -> dict[str, str]:
    return {t["name"]: t["value"] for t in message["Tags"]}


def test_ledger_mints_and_transfers_with_notices(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module, [("Ticker", "LLAMA"), ("Denomination", "12"), ("Max-Supply", "1000")])
    send(alice, pid, "Mint", Quantity="600")
    bob = Ed25519Key.generate().address
    transfer = send(alice, pid, "Transfer", Recipient=bob, Quantity="250", **{"X-Petition": "hello"})
    body = result(pid, transfer).body
    debit, credit = body["Messages"]
    assert (debit["Target"], tags_of(debit)["Action"], tags_of(debit)["Quantity"]) == (alice.address, "Debit-Notice", "250")
    assert (credit["Target"], tags_of(credit)["Action"], tags_of(credit)["Sender"]) == (bob, "Credit-Notice", alice.address)
    assert tags_of(credit)["X-Petition"] == "hello"
    st = state(pid)
    assert json.loads(st[f"balance/{alice.address}"]) == "350"
    assert json.loads(st[f"balance/{bob}"]) == "250"
    assert json.loads(st["supply"]) == "600"


def test_insufficient_balance_is_an_error_reply_and_changes_nothing(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module)
    send(alice, pid, "Mint", Quantity="5")
    batch.evaluate_pending(process_id=pid)
    before = state(pid)
    bad = send(alice, pid, "Transfer", Recipient=Ed25519Key.generate().address, Quantity="6")
    res = result(pid, bad)
    [reply] = res.body["Messages"]
    assert tags_of(reply)["Action"] == "Transfer-Error"
    assert "insufficient balance" in tags_of(reply)["Error"]
    assert res.error == ""
    assert state(pid) == before


@pytest.mark.parametrize(
    ("action", "tags", "expected"),
    [
        ("Set-Then-Fail", {}, "failed after writing"),
        ("Set-Then-Crash", {}, "ValueError: a bug in the handler"),
        ("Loop", {}, "out of fuel"),
        ("Alloc", {"Size": str(512 * 1024 * 1024)}, "MemoryError"),
        ("Sleep", {}, "cannot sleep"),
    ],
    ids=["process-error", "handler-bug", "fuel", "memory-limit", "sleep"],
)
def test_failures_record_an_error_and_leave_state_unchanged(
    alice: Ed25519Key, probe_module: str, action: str, tags: dict[str, str], expected: str
) -> None:
    pid = spawn(alice, probe_module, [("Compute-Limit", str(2_000_000_000)), ("Memory-Limit", "64-mb")])
    send(alice, pid, "Set", "before")
    batch.evaluate_pending(process_id=pid)
    before = state(pid)
    hash_before = models.Evaluation.objects.get(process_id=pid).state_hash
    failing = send(alice, pid, action, "after", **tags)
    res = result(pid, failing)
    assert expected in res.error
    assert res.body["Error"] == res.error
    assert res.body["Messages"] == []
    assert state(pid) == before
    assert res.state_hash != hash_before  # the error itself is part of the replayable history
    after = send(alice, pid, "Get")
    assert result(pid, after).body["Output"] == '"before"'


def test_entropy_and_clocks_come_from_the_message(alice: Ed25519Key, probe_module: str) -> None:
    pid = spawn(alice, probe_module)
    first, second = send(alice, pid, "Entropy"), send(alice, pid, "Entropy")
    out1 = json.loads(result(pid, first).body["Output"])
    out2 = json.loads(result(pid, second).body["Output"])
    a1 = models.Assignment.objects.get(process_id=pid, message__id=first)
    assert round(out1["time"] * 1000) == a1.timestamp  # seconds and nanoseconds from the ms timestamp
    assert out1["monotonic"] == a1.timestamp * 1_000_000
    assert out1["random"] != out2["random"] and out1["urandom"] != out2["urandom"]
    # The log replayed on a fresh runtime (instances fresh where the window rule says) gives the same values.
    report = verify.verify_process(process_id=pid)
    assert report.ok and report.checked == 3, report.divergence


def test_processes_see_no_environment_and_no_filesystem(alice: Ed25519Key, probe_module: str) -> None:
    pid = spawn(alice, probe_module)
    out = json.loads(result(pid, send(alice, pid, "Env")).body["Output"])
    assert out["environ"] == {}
    assert out["files"] in ([], "FileNotFoundError", "PermissionError", "OSError")


def test_user_cannot_forge_from_or_owner(alice: Ed25519Key, probe_module: str) -> None:
    pid = spawn(alice, probe_module)
    forged = send(alice, pid, "Whoami", **{"From-Process": "F" * 43, "From": "G" * 43, "Owner": "H" * 43})
    out = json.loads(result(pid, forged).body["Output"])
    assert out["From"] == alice.address and out["Owner"] == alice.address
    assert out["Forwarded-By"] is None
    names = {n for n, _ in out["Tags"]}
    assert not names & {"From-Process", "From", "Owner"}


def test_outbox_to_a_local_process_is_pushed_once_with_from_process(alice: Ed25519Key, probe_module: str) -> None:
    sender = spawn(alice, probe_module)
    receiver = spawn(alice, probe_module, [("Name", "receiver")])
    batch.evaluate_pending(process_id=receiver)
    send(alice, sender, "Send", "payload", To=receiver, **{"Forward-Action": "Whoami"})
    batch.evaluate_pending(process_id=sender)
    batch.evaluate_pending(process_id=sender)  # twice: nothing more
    assert models.Push.objects.count() == 1
    pushes.deliver_pending()
    pushes.deliver_pending()
    batch.evaluate_pending(process_id=receiver)
    pushed = models.Result.objects.get(process_id=receiver, nonce=1)
    out = json.loads(pushed.body["Output"])
    assert out["From"] == sender
    assert out["Forwarded-By"] == keys.messenger_key().address
    assert models.Assignment.objects.filter(process_id=receiver).count() == 2


def test_evaluation_is_exactly_once_and_ordered(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module)
    ids = [send(alice, pid, "Mint", Quantity="1") for _ in range(5)]
    assert batch.evaluate_pending(process_id=pid, batch_size=2) == 6
    assert batch.evaluate_pending(process_id=pid) == 0
    assert list(models.Result.objects.filter(process_id=pid).values_list("nonce", flat=True)) == list(range(6))
    assert json.loads(state(pid)["supply"]) == "5"
    assert [r.message_id for r in models.Result.objects.filter(process_id=pid, nonce__gte=1)] == ids


def test_missing_module_is_a_fault_of_this_node_not_a_result(alice: Ed25519Key, node_keys: None) -> None:
    pid = spawn(alice, factories.MODULE_ID)
    with pytest.raises(HostFault, match="not in this node's store"):
        batch.evaluate_pending(process_id=pid)
    assert not models.Result.objects.filter(process_id=pid).exists()
    status = health.process_health(pid)
    assert status is not None and status.state == "retrying" and "not in this node's store" in status.fault


def test_limits_parse_ao_forms() -> None:
    assert cu.parse_memory_limit("16-gb") == 16 * 1024**3
    assert cu.parse_memory_limit("512-mb") == 512 * 1024**2
    assert cu.parse_memory_limit(None) == cu.DEFAULT_MEMORY_LIMIT
    with pytest.raises(cu.LimitError, match="between 1 byte and 16-gb"):
        cu.parse_memory_limit("17-gb")
    with pytest.raises(cu.LimitError, match="is not like"):
        cu.parse_memory_limit("lots")
    with pytest.raises(cu.LimitError):
        cu.parse_compute_limit("-5")
    assert su.is_id(factories.MODULE_ID)
    assert dataitem is not None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_result_with_a_non_json_number_is_the_messages_error(constant: str) -> None:
    with pytest.raises(cu.ResultError, match=f"contains {constant}"):
        cu.normalize_result('{"Output": ' + constant + '}')


def test_the_lean_call_path_records_what_the_library_path_replays(
    alice: Ed25519Key, probe_module: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Live evaluation crosses the component boundary by wasm_fastcall; replay here by wasmtime-py's own conversions:
    every result, state hash and fuel figure must agree, errors and refusals included."""
    from ao.effects import compute, wasm_fastcall
    from ao.effects.wasm_runtime import ComponentRuntime

    assert wasm_fastcall.ENABLED and compute.component_runtime().fast_calls
    pid = spawn(alice, probe_module)
    sent = [send(alice, pid, "Set", "vält 1", Key="a"), send(alice, pid, "Get", Key="a"),
            send(alice, pid, "Get", Key="missing"), send(alice, pid, "Set-Then-Fail", "x", Key="a"),
            send(alice, pid, "Set-Then-Crash", "y", Key="b"), send(alice, pid, "Entropy"),
            send(alice, pid, "Weave-Read", Path="/data/" + "x" * 43), send(alice, pid, "Whoami"),
            send(alice, pid, "Work", N="300"), send(alice, pid, "Get", Key="a")]
    batch.evaluate_pending(process_id=pid)
    outputs = [models.Result.objects.get(process_id=pid, message_id=m).body for m in sent]
    assert json.loads(outputs[1]["Output"]) == "vält 1" and outputs[2]["Output"] == "null"
    assert outputs[3]["Error"] == "failed after writing" and "ValueError" in outputs[4]["Error"]
    assert "WeaveDrive is not enabled" in outputs[6]["Error"]
    library: list[ComponentRuntime] = []

    def library_runtime() -> ComponentRuntime:
        library.append(ComponentRuntime(compute.component_runtime().cache_dir, fast_calls=False))
        return library[-1]

    monkeypatch.setattr(verify, "fresh_component_runtime", library_runtime)
    report = verify.verify_process(process_id=pid)
    assert report.ok and report.checked == len(sent) + 1, report.divergence
    assert len(library) == 1 and not library[0]._callbacks  # the replay really took the library's path


def test_handlers_get_a_read_only_env_and_random_seeded_by_their_message(alice: Ed25519Key, probe_module: str) -> None:
    import hashlib
    import random

    pid = spawn(alice, probe_module)
    write, after = send(alice, pid, "Env-Write"), send(alice, pid, "Process-Id")
    draws = send(alice, pid, "Entropy-Twice")
    assert "TypeError" in result(pid, write).body["Error"]  # the env is shared by the instance's messages
    assert result(pid, after).body["Output"] == pid
    nonce = models.Assignment.objects.get(process_id=pid, message__id=draws).nonce
    expected = random.Random(hashlib.sha256(f"{draws}/{nonce}".encode()).digest())
    assert json.loads(result(pid, draws).body["Output"]) == [expected.random(), expected.randint(0, 10**9)]


@settings(max_examples=150, deadline=None)
@given(tags=st.lists(st.tuples(st.sampled_from(["Action", "From", "Owner", "From-Process", "Pushed-For",
                                                "Forwarded-By", "X-Note"]), st.text(max_size=12)), max_size=6),
       data=st.binary(max_size=24), target=st.booleans(), anchor=st.booleans(), push=st.booleans(),
       nonce=st.integers(min_value=0, max_value=2**53))
def test_the_message_text_is_the_canonical_json_of_the_message(
    tags: list[tuple[str, str]], data: bytes, target: bool, anchor: bool, push: bool, nonce: int,
) -> None:
    item = dataitem.create_data_item(_TEXT_KEY, data, tags=tags, target="t" * 43 if target else None,
                                     anchor=b"a" * 32 if anchor else None)
    slot = cu.Slot("p" * 43, nonce, 0, 1_700_000_000_000 + nonce, nonce // 7, "h" * 43)
    assert cu.message_text(item, slot, genuine_push=push) == cu.canonical(
        cu.message_json(item, slot, genuine_push=push)).decode()


_TEXT_KEY = Ed25519Key.from_seed(bytes(32))
