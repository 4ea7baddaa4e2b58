"""Data migrations on a database that already holds the rows they rewrite."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE, AFTER = ("web", "0004_audit_and_timeline"), ("web", "0005_petition_request_answers")
LOG = ("ao", "0008_leaner_indexes")  # the results the data step reads


def _id(name: str) -> str:
    return name.ljust(43, "x")


@pytest.mark.django_db(transaction=True)  # schema changes: SQLite cannot alter tables inside the test's transaction
def test_sent_petitions_get_the_answers_the_projection_has_already_seen() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    old = executor.loader.project_state([BEFORE, LOG]).apps
    request, petition = old.get_model("web", "PetitionRequest"), old.get_model("web", "Petition")
    process, result = old.get_model("ao", "Process"), old.get_model("ao", "Result")
    war = process.objects.create(id=_id("war"), owner_address=_id("owner"), module=_id("module"),
                                 scheduler=_id("su"))
    for name in ("credited", "refused", "unprojected", "unevaluated"):
        request.objects.create(message_id=_id(name), petitioner=_id("p"), sender_name="A", text="t", offering=1,
                               source="signed")
    petition.objects.create(id=_id("credited"), petitioner=_id("p"), status="submitted")
    for nonce, name in enumerate(("credited", "refused", "unprojected")):
        result.objects.create(process=war, nonce=nonce, message_id=_id(name), body={}, gas_used=0,
                              state_hash="0" * 64)
    # The projection has read the ledger's first two results, not the third.
    old.get_model("web", "Projection").objects.create(process_id=war.id, next_nonce=2)

    executor = MigrationExecutor(connection)
    executor.migrate([AFTER])
    new = executor.loader.project_state([AFTER, LOG]).apps.get_model("web", "PetitionRequest")
    answers = dict(new.objects.values_list("message_id", "ledger_answer"))
    assert answers == {_id("credited"): "credited", _id("refused"): "refused", _id("unprojected"): "",
                       _id("unevaluated"): ""}
