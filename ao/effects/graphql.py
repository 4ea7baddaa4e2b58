"""The gateway's GraphQL subset that AO clients use, served with graphql-core over the store.

Supported: ``transactions(ids, owners, recipients, tags: [{name, values}], first, after,
sort)`` returning the Arweave connection shape, and ``transaction(id)``. Transaction fields
follow Arweave's schema, deprecated ``parent`` included: AO's scheduler-utils still asks for it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from graphql import GraphQLSchema, build_schema, graphql_sync

from ao import models
from ao.permaweb.store import Invalid, Record, Store

SDL = """
enum SortOrder { HEIGHT_ASC HEIGHT_DESC INGESTED_AT_ASC INGESTED_AT_DESC }
input TagFilter { name: String! values: [String!]! op: String }
type Owner { address: String! key: String! }
type Amount { winston: String! ar: String! }
type MetaData { size: String! type: String }
type Tag { name: String! value: String! }
type Block { id: ID! timestamp: Int! height: Int! previous: ID! }
type Bundle { id: ID! }
type Parent { id: ID! }
type Transaction {
  id: ID! anchor: String! signature: String! recipient: String!
  owner: Owner! fee: Amount! quantity: Amount! data: MetaData! tags: [Tag!]!
  block: Block bundledIn: Bundle parent: Parent @deprecated(reason: "Use `bundledIn`") ingested_at: Int
}
type PageInfo { hasNextPage: Boolean! }
type TransactionEdge { cursor: String! node: Transaction! }
type TransactionConnection { pageInfo: PageInfo! edges: [TransactionEdge!]! }
type Query {
  transaction(id: ID!): Transaction
  transactions(
    ids: [ID!], owners: [String!], recipients: [String!], tags: [TagFilter!],
    first: Int = 10, after: String, sort: SortOrder = HEIGHT_DESC
  ): TransactionConnection!
}
"""

MAX_FIRST = 100
ZERO = {"winston": "0", "ar": "0.000000000000"}


@cache
def schema() -> GraphQLSchema:
    """The schema, with resolvers bound."""
    built = build_schema(SDL)
    query = built.query_type
    assert query is not None
    query.fields["transactions"].resolve = _resolve_transactions
    query.fields["transaction"].resolve = _resolve_transaction
    return built


def execute(store: Store, query: str, variables: dict[str, Any] | None) -> dict[str, Any]:
    """Run a query; returns {"data": ..., "errors": [...]} as a GraphQL server answers."""
    result = graphql_sync(schema(), query, variable_values=variables, context_value={"store": store})
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [{"message": e.message} for e in result.errors]
    return body


def _node(record: Record) -> dict[str, Any]:
    block = None
    if record.block_height is not None:
        row = models.Block.objects.filter(height=record.block_height).first()
        if row is not None:
            block = {"id": row.indep_hash, "timestamp": row.timestamp, "height": row.height, "previous": row.previous}
    content_type = next((t.value for t in record.tags if t.name == "Content-Type"), None)
    return {
        "id": record.id,
        "anchor": record.extra.get("anchor", ""),
        "signature": "",
        "recipient": record.target,
        "owner": {"address": record.owner_address, "key": record.owner},
        "fee": ZERO,
        "quantity": ZERO,
        "data": {"size": str(record.data_size), "type": content_type},
        "tags": [{"name": t.name, "value": t.value} for t in record.tags],
        "block": block,
        "bundledIn": None,
        "parent": None,
        "ingested_at": None,
    }


def _resolve_transactions(_root: Any, info: Any, **args: Any) -> dict[str, Any]:
    store: Store = info.context["store"]
    first = max(0, min(int(args.get("first") or 10), MAX_FIRST))
    descending = args.get("sort", "HEIGHT_DESC") in ("HEIGHT_DESC", "INGESTED_AT_DESC")
    tags = [(t["name"], list(t["values"])) for t in args.get("tags") or []]
    try:
        records = store.query(
            ids=args.get("ids"),
            owners=args.get("owners"),
            tags=tags,
            first=first + 1,
            after=args.get("after"),
            descending=descending,
            recipients=args.get("recipients"),
        )
    except Invalid as exc:
        raise ValueError(str(exc)) from exc
    page = records[:first]
    return {
        "pageInfo": {"hasNextPage": len(records) > first},
        "edges": [{"cursor": r.extra.get("cursor", r.id), "node": _node(r)} for r in page],
    }


def _resolve_transaction(_root: Any, info: Any, id: str) -> dict[str, Any] | None:  # noqa: A002
    records = info.context["store"].query(ids=[id], first=1)
    return _node(records[0]) if records else None
