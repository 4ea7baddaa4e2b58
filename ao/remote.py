"""Verify a process of another node from its public endpoints alone, with this node's own compute unit.

Nothing of the remote node is trusted but what its signatures and proofs carry:

- the log comes from the remote scheduler (``GET /ao/su/<process>?from-nonce=&limit=``, paged); each assignment is
  rebuilt from its JSON into the signed item and checked by ``ao.verify`` like a local one (signature, scheduler,
  nonce, hash chain, timestamps); each message's bytes come from the remote gateway (``/ao/gateway/raw/<id>``) and
  must be the signed item the assignment names;
- the module and every transaction the log vouches for (Attestation / Available items) are fetched through the
  remote gateway with every chunk proven against the transaction's signed ``data_root`` (``GatewayStore``), then
  kept in this node's store;
- the results and state hashes come from the remote compute unit (``GET /ao/cu/results/<process>``, paged) and
  are what the replay is compared with; pushes are judged against the sources' results as the remote compute
  unit serves them, and the command then verifies those source processes the same way.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from typing import Any

import requests

from ao.effects.stores import embedded_store
from ao.errors import HostUnavailable
from ao.permaweb import dataitem
from ao.permaweb.b64 import b64url_decode
from ao.permaweb.gateway import GatewayStore
from ao.permaweb.store import NotFound, StoreError
from ao.permaweb.tags import encode_tags
from ao.permaweb.wallet import SCHEMES
from ao.verify import Recorded, Slot, VerifyReport, replay

PAGE = 1000
TIMEOUT_S = 60.0


class RemoteNode:
    """The public AO endpoints of another Llama Fed node, read-only."""

    def __init__(self, url: str, *, session: requests.Session | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the remote node's URL must be http(s), got {url!r}")
        self.base = url.rstrip("/")
        self.session = session or requests.Session()
        self.gateway = GatewayStore(f"{self.base}/ao/gateway", session=self.session)
        self._logs: dict[str, list[Slot]] = {}
        self._results: dict[str, dict[int, Recorded]] = {}

    def _get(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        try:
            response = self.session.get(f"{self.base}{path}", params=params, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise HostUnavailable(f"cannot reach {self.base}{path}: {exc}") from exc
        if response.status_code >= 500:
            raise HostUnavailable(f"{self.base}{path} answered HTTP {response.status_code}")
        return response

    def _json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self._get(path, params)
        if response.status_code != 200:
            raise HostUnavailable(f"{self.base}{path} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except ValueError as exc:
            raise HostUnavailable(f"{self.base}{path} did not answer JSON") from exc

    def log(self, process_id: str) -> list[Slot]:
        """Every slot of a process's log, as the remote scheduler serves it."""
        if process_id not in self._logs:
            slots: list[Slot] = []
            after = -1
            while True:
                page = self._json(f"/ao/su/{process_id}", {"from-nonce": after, "limit": PAGE})
                for edge in page.get("edges") or []:
                    slot = self._slot(edge)
                    if slot.nonce < 0:
                        slot = Slot(nonce=len(slots), assignment_raw=slot.assignment_raw, message_raw=None,
                                    columns={})
                    slots.append(slot)
                    after = slot.nonce
                if not (page.get("page_info") or {}).get("has_next_page") or not page.get("edges"):
                    break
            self._logs[process_id] = slots
        return self._logs[process_id]

    def _slot(self, edge: dict[str, Any]) -> Slot:
        node = edge.get("node", edge)
        try:
            assignment = item_from_json(node.get("assignment") or {})
        except _Unreadable:  # served damaged: an empty item, which the replay names as a damaged assignment
            return Slot(nonce=-1, assignment_raw=b"", message_raw=None, columns={})
        tags = dict(reversed(assignment.tags))
        message_id = tags.get("Message", "")
        raw = self._get(f"/ao/gateway/raw/{message_id}")
        message_raw = raw.content if raw.status_code == 200 else None
        try:
            nonce = int(tags.get("Nonce", ""))
        except ValueError:
            nonce = -1
        columns = {"id": assignment.id, "epoch": _int(tags.get("Epoch")), "timestamp": _int(tags.get("Timestamp")),
                   "block_height": _int(tags.get("Block-Height")), "hash_chain": tags.get("Hash-Chain", ""),
                   "message": message_id}
        return Slot(nonce=nonce, assignment_raw=assignment.serialize(), message_raw=message_raw, columns=columns)

    def results(self, process_id: str) -> dict[int, Recorded]:
        """Every result the remote compute unit serves for a process, by nonce."""
        if process_id not in self._results:
            found: dict[int, Recorded] = {}
            after: int | None = None
            while True:
                params: dict[str, Any] = {"limit": PAGE, "sort": "ASC"}
                if after is not None:
                    params["from"] = after
                page = self._json(f"/ao/cu/results/{process_id}", params)
                edges = page.get("edges") or []
                for edge in edges:
                    nonce = int(edge["cursor"])
                    body = dict(edge.get("node") or {})
                    gas = body.pop("GasUsed", None)
                    found[nonce] = Recorded(body=body, state_hash=str(edge.get("stateHash", "")),
                                            gas_used=gas if isinstance(gas, int) else None,
                                            pushed_for=edge.get("pushedFor"), origin=edge.get("origin"))
                    after = nonce
                if not (page.get("pageInfo") or {}).get("hasNextPage") or not edges:
                    break
            self._results[process_id] = found
        return self._results[process_id]

    def keep_transaction(self, tx_id: str) -> bool:
        """Fetch a transaction through the remote gateway, every chunk proven, into this node's store; False if the
        remote has no such transaction (the replay then sees what a node without it sees)."""
        store = embedded_store()
        try:
            store.get_transaction(tx_id)
            return True
        except NotFound:
            pass
        try:
            header = self.gateway.get_transaction(tx_id)
        except NotFound:
            return False
        except StoreError as exc:
            raise HostUnavailable(f"cannot fetch transaction {tx_id} from {self.base}: {exc}") from exc
        with tempfile.TemporaryFile() as spool:
            try:
                for piece in self.gateway.stream(tx_id):
                    spool.write(piece)
            except StoreError as exc:
                raise HostUnavailable(f"transaction {tx_id} from {self.base} failed: {exc}") from exc
            spool.seek(0)
            store.put_transaction(header, spool)
        return True


def _int(value: str | None) -> int | None:
    try:
        return int(value or "")
    except ValueError:
        return None


def item_from_json(node: dict[str, Any]) -> dataitem.DataItem:
    """The signed data item a scheduler's JSON describes (signature, owner, target, anchor, tags, data)."""
    try:
        owner = b64url_decode((node.get("owner") or {}).get("key") or "")
        signature = b64url_decode(node.get("signature") or "")
        kind = next(t for t, scheme in SCHEMES.items() if scheme.owner_length == len(owner))
        tags = tuple((t["name"], t["value"]) for t in node.get("tags") or [])
        item = dataitem.DataItem(
            signature_type=kind, signature=signature, owner=owner,
            target=b64url_decode(node.get("target") or ""), anchor=b64url_decode(node.get("anchor") or ""),
            tags=tags, raw_tags=encode_tags(list(tags)) if tags else b"",
            data=(node.get("data") or "").encode("utf-8"),
        )
        if not tags and not dataitem.verify(item):
            # No tags may have been written as an empty Avro array (one 0x00 byte, what Avro libraries write and
            # arbundles accepts): the JSON cannot say which, the signature can.
            avro_empty = dataclasses.replace(item, raw_tags=b"\x00")
            if dataitem.verify(avro_empty):
                return avro_empty
        return item
    except (StopIteration, KeyError, TypeError, ValueError) as exc:
        # A damaged assignment: an item that cannot verify, so the replay names it.
        raise _Unreadable(str(exc)) from exc


class _Unreadable(ValueError):
    pass


@dataclass
class RemoteSources:
    """Facts about source processes, from the same remote node (its scheduler and compute unit)."""

    node: RemoteNode

    def assignment_timestamp(self, process_id: str, nonce: int) -> int | None:
        log = self.node.log(process_id)
        if not 0 <= nonce < len(log) or log[nonce].nonce != nonce:
            return None
        return log[nonce].columns.get("timestamp")

    def result(self, process_id: str, nonce: int) -> tuple[dict[str, Any], str] | None:
        recorded = self.node.results(process_id).get(nonce)
        if recorded is None:
            return None
        return recorded.body, recorded.pushed_for or ""

    def module(self, process_id: str) -> str | None:
        log = self.node.log(process_id)
        if not log or log[0].message_raw is None:
            return None
        try:
            return dataitem.parse(log[0].message_raw).tag("Module")
        except dataitem.DataItemError:
            return None

    def accepted_before(self, target: str, origin: str, nonce: int) -> bool:
        return False  # the replay starts at nonce 0 and sees every acceptance itself


class RemoteRecord:
    """A remote node's record of one process, in the shape ``ao.verify.replay`` reads."""

    def __init__(self, node: RemoteNode, process_id: str) -> None:
        self.node, self.process_id = node, process_id
        self.sources = RemoteSources(node)

    def prepare(self) -> None:
        """Bring the module and every vouched-for transaction into this node's store (verified)."""
        log = self.node.log(self.process_id)
        wanted: list[str] = []
        for index, slot in enumerate(log):
            if slot.message_raw is None:
                continue
            try:
                item = dataitem.parse(slot.message_raw)
            except dataitem.DataItemError:
                continue
            if index == 0 and item.tag("Module"):
                wanted.append(item.tag("Module") or "")
            if item.tag("Type") in ("Attestation", "Available") and item.tag("Message"):
                wanted.append(item.tag("Message") or "")
        for tx_id in dict.fromkeys(wanted):
            self.node.keep_transaction(tx_id)

    def log_length(self) -> int:
        return len(self.node.log(self.process_id))

    def evaluated_up_to(self) -> int:
        results = self.node.results(self.process_id)
        return max(results) + 1 if results else 0

    def slots(self, start: int, end: int) -> list[Slot]:
        return self.node.log(self.process_id)[start:end]

    def results(self, start: int, end: int) -> dict[int, Recorded]:
        return {n: r for n, r in self.node.results(self.process_id).items() if start <= n < end}

    def results_beyond(self, length: int) -> int | None:
        beyond = [n for n in self.node.results(self.process_id) if n >= length]
        return min(beyond) if beyond else None

    def state(self) -> None:
        return None  # not served; the state hashes cover every write

    def checkpoints(self) -> dict[int, str]:
        return {}


def verify_remote(*, url: str, process_id: str, node: RemoteNode | None = None,
                  progress: Any = None) -> VerifyReport:
    """Replay a remote node's process here and compare with what its compute unit serves."""
    node = node or RemoteNode(url)
    record = RemoteRecord(node, process_id)
    try:
        record.prepare()
    except HostUnavailable as exc:
        return VerifyReport(process_id, 0, None, 0.0, fault=str(exc))
    return replay(record, progress=progress)
