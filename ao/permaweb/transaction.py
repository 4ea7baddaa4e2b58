"""Arweave L1 format-2 transactions: build, sign, verify, and the /tx/{id} header JSON.

Signature data is the deep hash of
``["2", owner, target, quantity, reward, last_tx, [[name, value], ...], data_size, data_root]``
(numbers as decimal ASCII, everything else raw bytes); the id is
base64url(sha256(signature)). data_root comes from ``merkle.py`` and is empty
for empty data. Field limits follow the Arweave node (``ar_tx``): tags at most
2048 bytes of names plus values, decimal fields at most 21 digits, last_tx
empty, 32 or 48 bytes, target empty or 32 bytes (32 when quantity > 0).

What we use from arweave-python-client 1.0.19, and why: nothing at run time.
Reading its source (``arweave/arweave_lib.py``, ``merkle.py``,
``transaction_uploader.py``) and testing it against arweave-js showed that
using it costs more than it gives:

* its data_root is wrong whenever the size is a multiple of 256 KiB (it omits
  the empty trailing leaf) or the last chunk would be under 32 KiB (it does not
  rebalance) — tests/permaweb/test_merkle_interop.py shows both;
* ``Transaction(...)`` fetches ``/tx_anchor`` and ``sign()`` fetches ``/price``
  from ``API_URL``, a module constant defined separately in ``arweave_lib`` and
  ``transaction_uploader``, so it cannot sign offline nor talk to a chosen
  gateway without monkey-patching two modules;
* ``to_dict()``/``json_data`` re-encode tags in place, so reading ``json_data``
  before ``send()`` double-encodes them; ``Wallet.verify()`` is ``pass``;
* building a ``Transaction`` re-validates the RSA key through python-jose and
  pycryptodome (hundreds of ms) where ours signs with the already-loaded key.

What it would give — the deep-hash, the tag encoding and the header shape — is
a few lines here, proven against arweave-js in both directions by
tests/permaweb/test_transaction_interop.py. Signing uses our ``Wallet``
(RSA-PSS, salt 32); verification accepts any salt length (arweave-js on Node
signs with 478).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Protocol

from . import merkle
from .b64 import B64Error, b64url_decode, b64url_encode
from .deephash import deep_hash
from .wallet import ARWEAVE_SIGNATURE_TYPE, verify

FORMAT = 2
OWNER_SIZE = 512
SIGNATURE_SIZE = 512
ID_SIZE = 32
ADDRESS_SIZE = 32
DATA_ROOT_SIZE = merkle.HASH_SIZE
LAST_TX_SIZES = (0, 32, 48)  # none, a transaction id, or a block hash
MAX_TAGS_BYTES = 2048
MAX_DECIMAL_DIGITS = 21
# Arweave nodes accept inline data up to this size in a v2 header.
MAX_INLINE_DATA = 12 * 1024 * 1024
HEADER_FIELDS = (
    "format",
    "id",
    "last_tx",
    "owner",
    "tags",
    "target",
    "quantity",
    "data",
    "data_size",
    "data_tree",
    "data_root",
    "reward",
    "signature",
)
REQUIRED_FIELDS = frozenset(HEADER_FIELDS) - {"data", "data_tree"}
OPTIONAL_FIELDS = frozenset({"data", "data_tree", "denomination"})
# Header fields that must be JSON strings (numbers too: Arweave sends decimal strings).
STRING_FIELDS = (
    "id",
    "last_tx",
    "owner",
    "target",
    "data_root",
    "signature",
    "data",
    "quantity",
    "reward",
    "data_size",
)
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class TransactionError(ValueError):
    """A transaction or header that is malformed, inconsistent or unsigned."""


class TransactionSigner(Protocol):
    """An Arweave RSA signer (our ``Wallet``)."""

    signature_type: int
    owner: bytes

    def sign(self, message: bytes) -> bytes: ...


def _as_bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TransactionError(f"{what} must be str or bytes, got {type(value).__name__}")


def _b64_field(value: str | bytes, what: str, sizes: Iterable[int]) -> bytes:
    """Bytes from raw bytes or a base64url string, checked against allowed lengths."""
    try:
        raw = value if isinstance(value, bytes) else b64url_decode(value)
    except B64Error as exc:
        raise TransactionError(f"{what} is not base64url: {exc}") from exc
    allowed = tuple(sizes)
    if len(raw) not in allowed:
        raise TransactionError(f"{what} must be {' or '.join(map(str, allowed))} bytes, got {len(raw)}")
    return raw


def _decimal(value: Any, what: str) -> int:
    """A non-negative integer from an int or a canonical decimal string."""
    if isinstance(value, bool):
        raise TransactionError(f"{what} must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = int(value)
    else:
        raise TransactionError(f"{what} must be a canonical decimal string, got {value!r}")
    if number < 0 or len(str(number)) > MAX_DECIMAL_DIGITS:
        raise TransactionError(f"{what} out of range: {number}")
    return number


def _normalize_tags(tags: Iterable[Any]) -> tuple[tuple[bytes, bytes], ...]:
    out: list[tuple[bytes, bytes]] = []
    for tag in tags:
        if hasattr(tag, "name") and hasattr(tag, "value"):
            name, value = tag.name, tag.value
        else:
            name, value = tag
        out.append((_as_bytes(name, "tag name"), _as_bytes(value, "tag value")))
    total = sum(len(n) + len(v) for n, v in out)
    if total > MAX_TAGS_BYTES:
        raise TransactionError(f"tags take {total} bytes, more than {MAX_TAGS_BYTES}")
    return tuple(out)


@dataclass(frozen=True)
class Transaction:
    """A format-2 L1 transaction; ``signature`` is empty until signed."""

    owner: bytes
    tags: tuple[tuple[bytes, bytes], ...]
    target: bytes
    quantity: int
    reward: int
    last_tx: bytes
    data_size: int
    data_root: bytes
    signature: bytes = b""
    data: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.owner) not in (0, OWNER_SIZE):
            raise TransactionError(f"owner must be {OWNER_SIZE} bytes")
        if len(self.target) not in (0, ADDRESS_SIZE):
            raise TransactionError(f"target must be empty or {ADDRESS_SIZE} bytes")
        if self.quantity > 0 and not self.target:
            raise TransactionError("a transfer (quantity > 0) needs a target")
        if self.owner and self.target == hashlib.sha256(self.owner).digest():
            raise TransactionError("target cannot be the owner's own address")
        if len(self.last_tx) not in LAST_TX_SIZES:
            raise TransactionError(f"last_tx must be {LAST_TX_SIZES} bytes, got {len(self.last_tx)}")
        for number, what in ((self.quantity, "quantity"), (self.reward, "reward"), (self.data_size, "data_size")):
            _decimal(number, what)
        if (self.data_size == 0) != (self.data_root == b""):
            raise TransactionError("data_root must be empty exactly when data_size is 0")
        if self.data_root and len(self.data_root) != DATA_ROOT_SIZE:
            raise TransactionError(f"data_root must be {DATA_ROOT_SIZE} bytes")
        if len(self.signature) not in (0, SIGNATURE_SIZE):
            raise TransactionError(f"signature must be {SIGNATURE_SIZE} bytes")
        if self.data and len(self.data) != self.data_size:
            raise TransactionError(f"inline data is {len(self.data)} bytes, data_size says {self.data_size}")
        _normalize_tags(self.tags)

    @property
    def signed(self) -> bool:
        """Whether the transaction carries an owner and a signature."""
        return bool(self.signature) and bool(self.owner)

    @property
    def id(self) -> str:
        """base64url(sha256(signature))."""
        if not self.signature:
            raise TransactionError("an unsigned transaction has no id")
        return b64url_encode(hashlib.sha256(self.signature).digest())

    def signature_data(self) -> bytes:
        """The 48-byte deep hash the owner signs."""
        if not self.owner:
            raise TransactionError("set the owner before computing signature data")
        return deep_hash(
            [
                str(FORMAT).encode(),
                self.owner,
                self.target,
                str(self.quantity).encode(),
                str(self.reward).encode(),
                self.last_tx,
                [[name, value] for name, value in self.tags],
                str(self.data_size).encode(),
                self.data_root,
            ]
        )

    def to_header(self, *, include_data: bool = False) -> dict[str, Any]:
        """The header as Arweave's /tx/{id} shows it; ``data`` is "" unless asked for inline data."""
        return {
            "format": FORMAT,
            "id": self.id,
            "last_tx": b64url_encode(self.last_tx),
            "owner": b64url_encode(self.owner),
            "tags": [{"name": b64url_encode(n), "value": b64url_encode(v)} for n, v in self.tags],
            "target": b64url_encode(self.target),
            "quantity": str(self.quantity),
            "data": b64url_encode(self.data) if include_data else "",
            "data_size": str(self.data_size),
            "data_tree": [],
            "data_root": b64url_encode(self.data_root),
            "reward": str(self.reward),
            "signature": b64url_encode(self.signature),
        }

    def tag_values(self, name: str) -> list[str]:
        """Values (UTF-8, replacement on errors) of every tag called ``name``."""
        key = name.encode()
        return [v.decode("utf-8", "replace") for n, v in self.tags if n == key]


def build(
    *,
    data: bytes | None = None,
    tree: merkle.ChunkTree | None = None,
    tags: Iterable[Any] = (),
    target: str | bytes = b"",
    quantity: int = 0,
    reward: int = 0,
    last_tx: str | bytes = b"",
    owner: bytes = b"",
) -> Transaction:
    """An unsigned transaction over ``data`` (kept inline) or a prebuilt tree (e.g. from a stream)."""
    if data is not None and tree is not None:
        raise TransactionError("give data or tree, not both")
    if data is not None:
        tree = merkle.tree_for(data) if data else None
    size = tree.data_size if tree is not None else 0
    return Transaction(
        owner=owner,
        tags=_normalize_tags(tags),
        target=_b64_field(target, "target", (0, ADDRESS_SIZE)),
        quantity=_decimal(quantity, "quantity"),
        reward=_decimal(reward, "reward"),
        last_tx=_b64_field(last_tx, "last_tx", LAST_TX_SIZES),
        data_size=size,
        data_root=tree.root if tree is not None and size else b"",
        data=data or b"",
    )


def build_from_stream(fileobj: BinaryIO, size: int, **fields: Any) -> tuple[Transaction, merkle.ChunkTree]:
    """An unsigned transaction over ``size`` bytes read from fileobj chunk by chunk, and its tree."""
    _, tree = merkle.compute_from_stream(fileobj, size)
    return build(tree=tree, **fields), tree


def sign(tx: Transaction, signer: TransactionSigner) -> Transaction:
    """The transaction with the signer as owner and its signature set."""
    if signer.signature_type != ARWEAVE_SIGNATURE_TYPE or len(signer.owner) != OWNER_SIZE:
        raise TransactionError("L1 transactions are signed by an Arweave RSA-4096 wallet")
    owned = replace(tx, owner=signer.owner, signature=b"")
    return replace(owned, signature=signer.sign(owned.signature_data()))


def verify_transaction(tx: Transaction) -> bool:
    """Whether the signature is the owner's over the transaction's fields."""
    if not tx.signed:
        return False
    return verify(ARWEAVE_SIGNATURE_TYPE, tx.owner, tx.signature_data(), tx.signature)


def parse_header(header: Mapping[str, Any]) -> Transaction:
    """A Transaction from a /tx/{id} header dict, validating every field strictly (not the signature)."""
    if not isinstance(header, Mapping):
        raise TransactionError("a header is a JSON object")
    keys = set(header)
    missing = REQUIRED_FIELDS - keys
    if missing:
        raise TransactionError(f"header lacks {sorted(missing)}")
    unknown = keys - REQUIRED_FIELDS - OPTIONAL_FIELDS
    if unknown:
        raise TransactionError(f"header has unknown fields {sorted(unknown)}")
    if header["format"] not in (FORMAT, str(FORMAT)):
        raise TransactionError(f"only format {FORMAT} is supported, got {header['format']!r}")
    if header.get("data_tree", []) != []:
        raise TransactionError("data_tree must be empty")
    if "denomination" in header and header["denomination"] not in ("0", 0, ""):
        raise TransactionError("only the base denomination is supported")
    for name in STRING_FIELDS:
        if name in header and not isinstance(header[name], str):
            raise TransactionError(f"{name} must be a string")
    raw_tags = header["tags"]
    if not isinstance(raw_tags, list):
        raise TransactionError("tags must be a list")
    tags: list[tuple[bytes, bytes]] = []
    for tag in raw_tags:
        if not isinstance(tag, Mapping) or set(tag) != {"name", "value"}:
            raise TransactionError(f"a tag is {{name, value}}, got {tag!r}")
        if not isinstance(tag["name"], str) or not isinstance(tag["value"], str):
            raise TransactionError("tag name and value are base64url strings")
        try:
            tags.append((b64url_decode(tag["name"]), b64url_decode(tag["value"])))
        except B64Error as exc:
            raise TransactionError(f"tag is not base64url: {exc}") from exc
    data_size = _decimal(header["data_size"], "data_size")
    data_root = _b64_field(header["data_root"], "data_root", (0, DATA_ROOT_SIZE))
    try:
        data = b64url_decode(header.get("data", "") or "")
    except B64Error as exc:
        raise TransactionError(f"data is not base64url: {exc}") from exc
    if len(data) > MAX_INLINE_DATA:
        raise TransactionError(f"inline data over {MAX_INLINE_DATA} bytes")
    if data and merkle.data_root(data) != data_root:
        raise TransactionError("inline data does not match data_root")
    tx = Transaction(
        owner=_b64_field(header["owner"], "owner", (OWNER_SIZE,)),
        tags=_normalize_tags(tags),
        target=_b64_field(header["target"], "target", (0, ADDRESS_SIZE)),
        quantity=_decimal(header["quantity"], "quantity"),
        reward=_decimal(header["reward"], "reward"),
        last_tx=_b64_field(header["last_tx"], "last_tx", LAST_TX_SIZES),
        data_size=data_size,
        data_root=data_root,
        signature=_b64_field(header["signature"], "signature", (SIGNATURE_SIZE,)),
        data=data,
    )
    if _b64_field(header["id"], "id", (ID_SIZE,)) != hashlib.sha256(tx.signature).digest():
        raise TransactionError("id is not sha256 of the signature")
    return tx


def verify_header(header: Mapping[str, Any]) -> bool:
    """Whether a header dict is well formed, its id matches and its signature verifies."""
    try:
        tx = parse_header(header)
    except TransactionError:
        return False
    return verify_transaction(tx)
