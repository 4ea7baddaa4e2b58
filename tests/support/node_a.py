"""A second node for the two-node tests, run as its own process with its own data dir and database.

``python -m tests.support.node_a setup`` makes the node's keys, a token ledger with transfers and a Fed on the tiny
model that decides one petition, and prints their ids as JSON; ``tamper <process> <nonce>`` changes what the node's
compute unit serves for one result. The caller sets LLAMAFED_DATA_DIR (and so the SQLite database) per node.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamafed.settings")
    import django

    django.setup()
    from django.core.management import call_command

    if sys.argv[1] == "setup":
        call_command("migrate", verbosity=0)
        call_command("ao", "init", stdout=open(os.devnull, "w"))
        print(json.dumps(setup()))
    elif sys.argv[1] == "tamper":
        from ao import models

        row = models.Result.objects.get(process_id=sys.argv[2], nonce=int(sys.argv[3]))
        row.body = {**row.body, "Output": "tampered"}
        row.save(update_fields=["body"])


def setup() -> dict[str, str]:
    from ao import services, weave
    from ao.effects import keys
    from ao.node import node_settle
    from ledger.models import Token
    from policy import services as fed_services
    from tests import factories
    from tests.policy.test_fed import OFFERING, TEST_PARAMS
    from tests.support.tiny_gguf import tiny_gguf_path

    def send(signer: object, target: str, action: str, **tags: str) -> str:
        item = factories.message_item(signer, target, action=action, extra=list(tags.items()))  # type: ignore[arg-type]
        services.su_schedule(raw=item.serialize())
        return item.id

    model = weave.weave_upload(path=tiny_gguf_path(Path(os.environ["LLAMAFED_DATA_DIR"])), tags=[], name="tiny")
    fed = fed_services.fed_bootstrap(model_tx=model, overrides=TEST_PARAMS).process_id
    war = Token.objects.get(ticker="wAR").process_id
    alice, bob = factories.user_key(), factories.user_key()
    send(keys.operator_wallet(), war, "Mint", Quantity=str(10**12), Recipient=alice.address)
    for quantity in (1, 2, 3):
        send(alice, war, "Transfer", Recipient=bob.address, Quantity=str(quantity))
    node_settle()
    petition = send(alice, war, "Transfer", Recipient=fed, Quantity=str(OFFERING),
                    **{"X-Petition": "I repaired the village well.", "X-Sender-Name": "Alice"})
    node_settle()
    return {"fed": fed, "war": war, "llama": Token.objects.get(ticker="LLAMA").process_id, "petition": petition}


if __name__ == "__main__":
    main()
