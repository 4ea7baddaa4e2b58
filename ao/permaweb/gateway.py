"""GatewayStore: the Store interface over the Arweave HTTP API (a gateway, a node, or ArLocal).

Endpoints: ``POST /tx`` (data inline when it fits one chunk, else ``POST /chunk``
per chunk with its data_path), ``GET /tx/{id}``, ``GET /tx/{id}/offset``,
``GET /chunk/{offset}``, ``GET /{id}``, ``POST /graphql``, ``GET /info``,
``GET /tx_anchor``, ``GET /price/{bytes}``, and ArLocal's ``/mine`` and ``/mint``.

Nothing the gateway says is trusted: a header is used only after its id and
signature verify; every chunk is checked against the header's data_root
(``merkle.prove_chunk``) before one byte of it is returned, and small data read
whole from ``GET /{id}`` must hash to the data_root. Chunks are requested at
their starts (computed from the size, as arweave-js cuts data), which is all
ArLocal answers; the proven bounds, not the assumed ones, decide what is used.

ANS-104 items: ArLocal 1.1.66 has no endpoint for raw data items, so
``put_item`` wraps the item in a one-item ANS-104 bundle (an L1 transaction
tagged Bundle-Format=binary, Bundle-Version=2.0.0) paid for by the store's
wallet. ``get_item_bytes`` finds the bundle through GraphQL ``bundledIn`` (or,
since ArLocal leaves ``bundledIn`` null, from the items this store put), reads
it with verified chunks, and returns the item only if its signature verifies.
ArLocal also indexes a bundled item only when the item's owner has an ArLocal
wallet (``mint`` one, even with 0).
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO

import requests

from . import dataitem, merkle
from .b64 import B64Error, b64url_decode, b64url_encode
from .store import (
    ChunkVerificationError,
    Duplicate,
    Invalid,
    NotFound,
    Record,
    Store,
    StoreError,
    StoreUnavailable,
    Tag,
)
from .transaction import (
    HEADER_FIELDS,
    Transaction,
    TransactionError,
    TransactionSigner,
    build,
    parse_header,
    sign,
    verify_transaction,
)

# (connect, read) seconds for every request.
DEFAULT_TIMEOUT = (5.0, 30.0)
# Data up to this size is read whole from GET /{id} and checked against data_root.
SMALL_DATA_LIMIT = merkle.MAX_CHUNK_SIZE
HEADER_CACHE_SIZE = 512
GRAPHQL_MAX_PAGE = 100
HTTP_OK = 200
HTTP_NO_CONTENT = 204
HTTP_ALREADY_PROCESSED = 208
HTTP_BAD_REQUEST = 400
HTTP_NOT_FOUND = 404
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500
BUNDLE_TAGS = (("Bundle-Format", "binary"), ("Bundle-Version", "2.0.0"))
BUNDLE_INT_SIZE = 32
BUNDLE_ID_SIZE = 32
# Keep a bundle header's claimed item count sane before allocating anything.
MAX_BUNDLE_ITEMS = 100_000
# Header fields kept from a gateway's /tx/{id} answer; the rest (ArLocal: height, block...) is dropped.
HEADER_KEYS = frozenset(HEADER_FIELDS) | {"denomination"}

_QUERY = """
query Q($ids: [ID!], $owners: [String!], $recipients: [String!], $tags: [TagFilter!], $first: Int,
        $after: String, $sort: SortOrder) {
  transactions(ids: $ids, owners: $owners, recipients: $recipients, tags: $tags, first: $first, after: $after,
               sort: $sort) {
    pageInfo { hasNextPage }
    edges {
      cursor
      node {
        id
        owner { address key }
        recipient
        tags { name value }
        data { size }
        block { height }
        bundledIn { id }
      }
    }
  }
}
"""


def encode_bundle(items: Sequence[bytes]) -> bytes:
    """An ANS-104 binary bundle of serialized data items."""
    parsed = [dataitem.parse(raw) for raw in items]
    header = [len(items).to_bytes(BUNDLE_INT_SIZE, "little")]
    for raw, item in zip(items, parsed, strict=True):
        header.append(len(raw).to_bytes(BUNDLE_INT_SIZE, "little"))
        header.append(b64url_decode(item.id))
    return b"".join(header) + b"".join(items)


def decode_bundle(data: bytes) -> list[tuple[str, bytes]]:
    """(id, serialized item) pairs of an ANS-104 binary bundle; raise Invalid if malformed."""
    if len(data) < BUNDLE_INT_SIZE:
        raise Invalid("bundle shorter than its item count")
    count = int.from_bytes(data[:BUNDLE_INT_SIZE], "little")
    entry = BUNDLE_INT_SIZE + BUNDLE_ID_SIZE
    body = BUNDLE_INT_SIZE + count * entry
    if count > MAX_BUNDLE_ITEMS or body > len(data):
        raise Invalid(f"bundle claims {count} items, more than its {len(data)} bytes hold")
    out: list[tuple[str, bytes]] = []
    cursor = body
    for index in range(count):
        at = BUNDLE_INT_SIZE + index * entry
        size = int.from_bytes(data[at : at + BUNDLE_INT_SIZE], "little")
        item_id = b64url_encode(data[at + BUNDLE_INT_SIZE : at + entry])
        if cursor + size > len(data):
            raise Invalid(f"bundle item {index} runs past the end of the bundle")
        out.append((item_id, data[cursor : cursor + size]))
        cursor += size
    return out


class GatewayStore(Store):
    """A Store backed by an Arweave HTTP API at ``base_url``."""

    def __init__(
        self,
        base_url: str,
        *,
        wallet: TransactionSigner | None = None,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        small_data_limit: int = SMALL_DATA_LIMIT,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"gateway base URL must be http(s), got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.wallet = wallet
        self.session = session or requests.Session()
        self.timeout = timeout
        self.small_data_limit = small_data_limit
        self._headers: OrderedDict[str, Transaction] = OrderedDict()
        self._first_offsets: dict[str, int] = {}
        self._item_bundles: dict[str, str] = {}

    # -- HTTP ---------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}/{path.lstrip('/')}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise StoreUnavailable(f"{method} {url}: {exc}") from exc
        except requests.RequestException as exc:
            raise StoreError(f"{method} {url}: {exc}") from exc
        if response.status_code >= HTTP_SERVER_ERROR or response.status_code == HTTP_TOO_MANY_REQUESTS:
            raise StoreUnavailable(f"{method} {url}: HTTP {response.status_code} {response.text[:200]}")
        return response

    @staticmethod
    def _json(response: requests.Response, what: str) -> Any:
        try:
            return json.loads(response.text)
        except ValueError as exc:
            raise StoreError(f"{what}: gateway answered non-JSON {response.text[:120]!r}") from exc

    def info(self) -> dict[str, Any]:
        """The gateway's /info document."""
        response = self._request("GET", "info")
        if response.status_code != HTTP_OK:
            raise StoreError(f"/info answered HTTP {response.status_code}")
        info = self._json(response, "/info")
        if not isinstance(info, dict):
            raise StoreError("/info is not an object")
        return info

    def block_height(self) -> int:
        """The current block height."""
        height = self.info().get("height")
        if not isinstance(height, int) or isinstance(height, bool) or height < 0:
            raise StoreError(f"/info height is not a block height: {height!r}")
        return height

    def mine(self, blocks: int = 1) -> int:
        """ArLocal only: mine ``blocks`` blocks; return the new height."""
        response = self._request("GET", f"mine/{int(blocks)}")
        if response.status_code != HTTP_OK:
            raise StoreError(f"/mine answered HTTP {response.status_code}: this is not ArLocal?")
        return int(self._json(response, "/mine")["height"])

    def mint(self, address: str, winston: int) -> int:
        """ArLocal only: credit ``winston`` to ``address`` (creating its wallet); return the balance."""
        response = self._request("GET", f"mint/{address}/{int(winston)}")
        if response.status_code != HTTP_OK:
            raise StoreError(f"/mint answered HTTP {response.status_code}: this is not ArLocal?")
        return int(response.text)

    def tx_anchor(self) -> str:
        """A recent anchor for last_tx."""
        response = self._request("GET", "tx_anchor")
        if response.status_code != HTTP_OK:
            raise StoreError(f"/tx_anchor answered HTTP {response.status_code}")
        return response.text.strip()

    def price(self, data_size: int, target: str = "") -> int:
        """The reward (winston) the gateway asks for ``data_size`` bytes."""
        path = f"price/{int(data_size)}" + (f"/{target}" if target else "")
        response = self._request("GET", path)
        text = response.text.strip()
        if response.status_code != HTTP_OK or not text.isdigit():
            raise StoreError(f"/price answered HTTP {response.status_code}: {text[:80]!r}")
        return int(text)

    # -- L1 transactions ----------------------------------------------------

    def put_transaction(self, header: dict, data: BinaryIO | bytes) -> str:
        """Check a signed v2 header against its data, post it and upload its chunks.

        ``data`` is bytes or a seekable binary file positioned at the data's first byte.
        """
        try:
            tx = parse_header(header)
        except TransactionError as exc:
            raise Invalid(f"bad transaction header: {exc}") from exc
        if not verify_transaction(tx):
            raise Invalid(f"transaction {tx.id} signature does not verify")
        if isinstance(data, (bytes, bytearray, memoryview)):
            if len(data) != tx.data_size:
                raise Invalid(f"data is {len(data)} bytes, data_size says {tx.data_size}")
            stream: BinaryIO = io.BytesIO(data)
        else:
            stream = data
        origin = stream.tell()
        try:
            root, tree = merkle.compute_from_stream(stream, tx.data_size)
        except merkle.ShortReadError as exc:
            raise Invalid(f"data is shorter than data_size {tx.data_size}: {exc}") from exc
        if tx.data_size and root != tx.data_root:
            raise Invalid(f"data does not match data_root of {tx.id}")
        if self._exists(tx.id):
            raise Duplicate(f"transaction {tx.id} is already on the gateway")
        chunks = tree.chunks if tx.data_size else ()
        body = tx.to_header()
        if len(chunks) == 1:
            stream.seek(origin)
            body["data"] = b64url_encode(stream.read(tx.data_size))
        self._post_json("tx", body, f"transaction {tx.id}")
        if len(chunks) > 1:
            for index, chunk in enumerate(chunks):
                stream.seek(origin + chunk.start)
                payload = {
                    "data_root": b64url_encode(tx.data_root),
                    "data_size": str(tx.data_size),
                    "data_path": b64url_encode(tree.proof_for(index)),
                    "offset": str(chunk.end - 1),
                    "chunk": b64url_encode(_read_exact(stream, chunk.size)),
                }
                self._post_json("chunk", payload, f"chunk {index} of {tx.id}")
        self._remember(tx)
        return tx.id

    def _post_json(self, path: str, body: dict[str, Any], what: str) -> None:
        response = self._request("POST", path, json=body)
        status = response.status_code
        if status == HTTP_OK:
            return
        if status == HTTP_ALREADY_PROCESSED:
            raise Duplicate(f"{what}: already processed")
        if status == HTTP_BAD_REQUEST:
            raise Invalid(f"{what} refused: {response.text[:200]}")
        raise StoreError(f"{what}: HTTP {status} {response.text[:200]}")

    def _exists(self, tx_id: str) -> bool:
        if tx_id in self._headers:
            return True
        response = self._request("GET", f"tx/{tx_id}")
        return response.status_code == HTTP_OK

    def _remember(self, tx: Transaction) -> None:
        self._headers[tx.id] = tx
        self._headers.move_to_end(tx.id)
        while len(self._headers) > HEADER_CACHE_SIZE:
            self._headers.popitem(last=False)

    def transaction(self, tx_id: str) -> Transaction:
        """The verified header of an L1 transaction."""
        cached = self._headers.get(tx_id)
        if cached is not None:
            return cached
        response = self._request("GET", f"tx/{tx_id}")
        if response.status_code in (HTTP_NOT_FOUND, HTTP_NO_CONTENT):
            raise NotFound(f"no transaction {tx_id}")
        if response.status_code != HTTP_OK:
            # Arweave answers 202 "Pending" before a transaction is mined.
            raise StoreUnavailable(f"/tx/{tx_id} answered HTTP {response.status_code}: {response.text[:80]}")
        raw = self._json(response, f"/tx/{tx_id}")
        if not isinstance(raw, dict):
            raise Invalid(f"/tx/{tx_id} is not an object")
        # Gateways add their own fields (ArLocal: height, block, owner_address...); keep the header's.
        fields = {k: v for k, v in raw.items() if k in HEADER_KEYS}
        fields.setdefault("data_tree", [])
        try:
            tx = parse_header(fields)
        except TransactionError as exc:
            raise Invalid(f"gateway served a bad header for {tx_id}: {exc}") from exc
        if tx.id != tx_id:
            raise Invalid(f"gateway served transaction {tx.id} for {tx_id}")
        if not verify_transaction(tx):
            raise Invalid(f"gateway served a header for {tx_id} whose signature does not verify")
        self._remember(tx)
        return tx

    def get_transaction(self, tx_id: str) -> dict:
        """The verified header as /tx/{id} shows it (data "")."""
        return self.transaction(tx_id).to_header()

    def data_size(self, tx_or_item_id: str) -> int:
        """Size of the data of a transaction or data item."""
        try:
            return self.transaction(tx_or_item_id).data_size
        except NotFound:
            return len(self._item(tx_or_item_id).data)

    def read(self, tx_or_item_id: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the data, every chunk verified before use."""
        try:
            tx = self.transaction(tx_or_item_id)
        except NotFound:
            data = self._item(tx_or_item_id).data
            stop = len(data) if end is None else end
            _check_range(start, stop, len(data))
            return data[start:stop]
        return b"".join(self.stream(tx.id, start, end))

    def stream(self, tx_id: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Verified pieces of bytes [start, end) of an L1 transaction's data, in order."""
        tx = self.transaction(tx_id)
        size = tx.data_size
        stop = size if end is None else end
        _check_range(start, stop, size)
        if start == stop:
            return
        if size <= self.small_data_limit:
            yield self._small_data(tx)[start:stop]
            return
        first = self._first_offset(tx)
        cursor = start
        while cursor < stop:
            _, chunk_start, _ = merkle.chunk_for_offset(size, cursor)
            chunk, proven = self._fetch_chunk(tx, first, chunk_start)
            if not proven.left_bound <= cursor < proven.right_bound:
                raise ChunkVerificationError(
                    f"chunk served for offset {chunk_start} of {tx.id} proves [{proven.left_bound}, "
                    f"{proven.right_bound}), which does not hold offset {cursor}"
                )
            yield chunk[cursor - proven.left_bound : min(stop, proven.right_bound) - proven.left_bound]
            cursor = proven.right_bound

    def _small_data(self, tx: Transaction) -> bytes:
        response = self._request("GET", tx.id)
        if response.status_code in (HTTP_NOT_FOUND, HTTP_NO_CONTENT):
            raise NotFound(f"gateway has no data for {tx.id}")
        if response.status_code != HTTP_OK:
            raise StoreError(f"/{tx.id} answered HTTP {response.status_code}")
        data = response.content
        if len(data) != tx.data_size or merkle.data_root(data) != tx.data_root:
            raise ChunkVerificationError(f"data served for {tx.id} does not match its data_root")
        return data

    def _first_offset(self, tx: Transaction) -> int:
        known = self._first_offsets.get(tx.id)
        if known is not None:
            return known
        response = self._request("GET", f"tx/{tx.id}/offset")
        if response.status_code in (HTTP_NOT_FOUND, HTTP_NO_CONTENT):
            raise NotFound(f"gateway has no chunks for {tx.id}")
        if response.status_code != HTTP_OK:
            raise StoreError(f"/tx/{tx.id}/offset answered HTTP {response.status_code}")
        body = self._json(response, f"/tx/{tx.id}/offset")
        try:
            end_offset, size = int(body["offset"]), int(body["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"/tx/{tx.id}/offset is malformed: {body!r}") from exc
        if size != tx.data_size:
            raise StoreError(f"/tx/{tx.id}/offset reports size {size}, the header says {tx.data_size}")
        first = end_offset - size + 1
        self._first_offsets[tx.id] = first
        return first

    def _fetch_chunk(self, tx: Transaction, first: int, offset: int) -> tuple[bytes, merkle.ValidatedChunk]:
        response = self._request("GET", f"chunk/{first + offset}")
        if response.status_code in (HTTP_NOT_FOUND, HTTP_NO_CONTENT):
            raise NotFound(f"gateway has no chunk at offset {offset} of {tx.id}")
        if response.status_code != HTTP_OK:
            raise StoreError(f"/chunk/{first + offset} answered HTTP {response.status_code}")
        body = self._json(response, f"/chunk/{first + offset}")
        try:
            chunk = b64url_decode(body["chunk"])
            path = b64url_decode(body["data_path"])
        except (KeyError, TypeError, B64Error) as exc:
            raise ChunkVerificationError(f"chunk at offset {offset} of {tx.id} is malformed: {exc}") from exc
        proven = merkle.prove_chunk(tx.data_root, tx.data_size, chunk, path, offset)
        if proven is None:
            raise ChunkVerificationError(f"chunk at offset {offset} of {tx.id} fails its proof against data_root")
        return chunk, proven

    # -- ANS-104 data items -------------------------------------------------

    def put_item(self, raw: bytes) -> str:
        """Verify a data item and post it in a one-item bundle paid by this store's wallet."""
        try:
            item = dataitem.parse(raw)
        except dataitem.DataItemError as exc:
            raise Invalid(f"bad data item: {exc}") from exc
        if not dataitem.verify(item):
            raise Invalid(f"data item {item.id} signature does not verify")
        if item.id in self._item_bundles or self.query(ids=[item.id], first=1):
            raise Duplicate(f"data item {item.id} is already on the gateway")
        if self.wallet is None:
            raise StoreError("this gateway takes data items only inside bundles; give GatewayStore a wallet")
        bundle = encode_bundle([bytes(raw)])
        unsigned = build(data=bundle, tags=BUNDLE_TAGS, reward=self.price(len(bundle)), last_tx=self.tx_anchor())
        tx = sign(unsigned, self.wallet)
        self.put_transaction(tx.to_header(), bundle)
        self._item_bundles[item.id] = tx.id
        return item.id

    def get_item_bytes(self, item_id: str) -> bytes:
        """The serialized data item, read from its bundle and verified."""
        return self._item(item_id).serialize()

    def _item(self, item_id: str) -> dataitem.DataItem:
        bundle_id = self._item_bundles.get(item_id)
        if bundle_id is None:
            records = self.query(ids=[item_id], first=1)
            if not records:
                raise NotFound(f"no transaction or data item {item_id}")
            bundle_id = records[0].extra.get("bundled_in", "")
            if not bundle_id:
                raise NotFound(f"the gateway does not say which bundle holds {item_id}")
        for found_id, raw in decode_bundle(self.read(bundle_id)):
            if found_id != item_id:
                continue
            try:
                item = dataitem.parse(raw)
            except dataitem.DataItemError as exc:
                raise Invalid(f"item {item_id} in bundle {bundle_id} is malformed: {exc}") from exc
            if item.id != item_id or not dataitem.verify(item):
                raise Invalid(f"item {item_id} in bundle {bundle_id} does not verify")
            return item
        raise NotFound(f"bundle {bundle_id} does not hold {item_id}")

    # -- GraphQL ------------------------------------------------------------

    def query(
        self,
        *,
        ids: Sequence[str] | None = None,
        tags: Iterable[tuple[str, Sequence[str]]] = (),
        owners: Sequence[str] | None = None,
        first: int = 100,
        after: str | None = None,
        descending: bool = False,
        recipients: Sequence[str] | None = None,
    ) -> list[Record]:
        """Records matching every filter, oldest block first (newest with descending); owners are addresses."""
        variables: dict[str, Any] = {
            "first": max(1, min(int(first), GRAPHQL_MAX_PAGE)),
            "sort": "HEIGHT_DESC" if descending else "HEIGHT_ASC",
        }
        if recipients is not None:
            variables["recipients"] = list(recipients)
        if ids is not None:
            variables["ids"] = list(ids)
        if owners is not None:
            variables["owners"] = list(owners)
        tag_filters = [{"name": name, "values": list(values)} for name, values in tags]
        if tag_filters:
            variables["tags"] = tag_filters
        if after:
            variables["after"] = after
        response = self._request("POST", "graphql", json={"query": _QUERY, "variables": variables})
        if response.status_code != HTTP_OK:
            raise StoreError(f"/graphql answered HTTP {response.status_code}: {response.text[:200]}")
        body = self._json(response, "/graphql")
        if body.get("errors"):
            raise StoreError(f"/graphql errors: {body['errors']}")
        try:
            edges = body["data"]["transactions"]["edges"]
            return [self._record(edge) for edge in edges]
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"/graphql answer is malformed: {exc}") from exc

    def _record(self, edge: dict[str, Any]) -> Record:
        node = edge["node"]
        bundled = (node.get("bundledIn") or {}).get("id") or self._item_bundles.get(node["id"], "")
        block = node.get("block") or {}
        extra = {"cursor": edge.get("cursor") or ""}
        if bundled:
            extra["bundled_in"] = bundled
        return Record(
            id=node["id"],
            owner=node["owner"]["key"],
            owner_address=node["owner"]["address"],
            tags=tuple(Tag(t["name"], t["value"]) for t in node.get("tags") or ()),
            data_size=int((node.get("data") or {}).get("size") or 0),
            kind="item" if bundled else "tx",
            block_height=int(block["height"]) if block.get("height") is not None else None,
            target=node.get("recipient") or "",
            extra=extra,
        )


def _check_range(start: int, end: int, size: int) -> None:
    if not 0 <= start <= end <= size:
        raise ValueError(f"range [{start}, {end}) is outside data of {size} bytes")


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining:
        block = stream.read(remaining)
        if not block:
            raise Invalid("data stream ended early while uploading chunks")
        parts.append(block)
        remaining -= len(block)
    return b"".join(parts)
