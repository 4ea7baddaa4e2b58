"""Nobody, the operator included, can override the Fed after the genesis: LLAMA has no owner and one grant
authority, the Fed has no reconfiguration, and no key alone can speak for either."""

from __future__ import annotations

import pytest

from ao import models, services, verify
from ao.effects import keys
from ao.units import mu
from ledger.tokens import BASE
from tests import factories
from tests.ao.test_cu import tags_of
from tests.policy.test_fed import (OFFERING, balance, make_fed, petition, send, sent, settle, tiny_model, token,
                                   user_with_war, value)

__all__ = ["tiny_model"]  # the fixture, imported for these tests


def replies(pid: str, message_id: str) -> list[dict[str, str]]:
    return [tags_of(m) for m in models.Result.objects.get(process_id=pid, message_id=message_id).body["Messages"]]


@pytest.mark.django_db
def test_the_genesis_binds_llama_to_the_fed_and_seals_it(tiny_model: str) -> None:
    fed = make_fed(tiny_model).process_id
    config = value(token("LLAMA"), "config")
    assert config["Grant-Authorities"] == [fed] and config["Owner"] is None
    assert config["Owner-Powers"] == "Bind-Once" and isinstance(config["Sealed-At"], int)
    # ... and the Fed grants through it (a fresh spawn still gives the Fed its authority).
    user = user_with_war()
    settle()
    pid = petition(user, fed, "I mended the fences of the community garden.")
    settle()
    assert value(fed, f"petition/{pid}")["grant"] == "granted" and balance("LLAMA", user.address) > 0


@pytest.mark.django_db
def test_the_operator_cannot_mint_add_an_authority_or_reconfigure_after_genesis(tiny_model: str) -> None:
    fed = make_fed(tiny_model).process_id
    llama, operator, accomplice = token("LLAMA"), keys.operator_wallet(), factories.user_key()
    before = {"llama": value(llama, "config"), "fed": value(fed, "config"), "supply": value(llama, "supply")}

    mint = send(operator, llama, "Mint", Quantity=str(1_000_000 * BASE), Recipient=accomplice.address)
    allow = send(operator, llama, "Allow-Grant", Authority=accomplice.address)
    grant = send(accomplice, llama, "Grant", Recipient=accomplice.address, Quantity=str(500_000 * BASE))
    reconfigure = [send(operator, fed, action, **tags) for action, tags in (
        ("Configure", {"Schedule": "0,0,0,0,0,1000000"}),
        ("Set-Governors", {"Governors": "[]"}),
        ("Set-Schedule", {"Schedule": "1000000,1000000,1000000,1000000,1000000,1000000"}),
        ("Set-Caps", {"Max-Supply": "1", "Epoch-Budget": "1"}),
        ("Eval", {}),
    )]
    settle()
    assert replies(llama, mint)[0]["Action"] == "Mint-Error" and "cannot be minted" in replies(llama, mint)[0]["Error"]
    assert replies(llama, allow)[0]["Action"] == "Allow-Grant-Error" and "sealed" in replies(llama, allow)[0]["Error"]
    assert replies(llama, grant)[0]["Action"] == "Grant-Error"
    for message in reconfigure:
        assert models.Result.objects.get(process_id=fed, message_id=message).body["Messages"] == []
    after = {"llama": value(llama, "config"), "fed": value(fed, "config"), "supply": value(llama, "supply")}
    assert after == before and balance("LLAMA", accomplice.address) == 0
    assert verify.verify_process(process_id=llama).ok and verify.verify_process(process_id=fed).ok


@pytest.mark.django_db
def test_the_messenger_key_cannot_speak_for_the_fed_or_for_war(tiny_model: str) -> None:
    fed = make_fed(tiny_model).process_id
    llama, war, messenger, mallory = token("LLAMA"), token("wAR"), keys.messenger_key(), factories.user_key()
    fed_module = models.Process.objects.get(id=fed).module
    war_module = models.Process.objects.get(id=war).module
    fed_spawn = models.Assignment.objects.get(process_id=fed, nonce=0).message.id
    # A Grant "from the Fed" and a Credit-Notice "from wAR", signed with the messenger's key, naming real slots.
    grant = mu.build_push(messenger, process_id=fed, module_id=fed_module, nonce=0, index=0, pushed_for=fed_spawn,
                          message=mu.OutboxMessage(llama, (("Action", "Grant"), ("Recipient", mallory.address),
                                                           ("Quantity", str(250_000 * BASE))), b""))
    notice = mu.build_push(messenger, process_id=war, module_id=war_module, nonce=1, index=0, pushed_for="N" * 43,
                           message=mu.OutboxMessage(fed, (
                               ("Action", "Credit-Notice"), ("Sender", mallory.address), ("Quantity", str(OFFERING)),
                               ("X-Petition", "Pay me."), ("X-Sender-Name", "Mallory")), b""))
    for item in (grant, notice):
        services.su_schedule(raw=item.serialize())
    settle()
    [refused] = replies(llama, grant.id)
    assert refused["Action"] == "Grant-Error" and messenger.address in refused["Error"]
    assert value(llama, "supply") == "0" and balance("LLAMA", mallory.address) == 0
    assert value(fed, "petition/" + "N" * 43) is None and value(fed, f"petition/{notice.id}") is None
    [fed_refusal] = sent(fed, action="Fed-Error", target=messenger.address)
    assert "only Credit-Notices from the wAR process" in fed_refusal["Error"]
    assert sent(fed, action="Deliberate") == []
