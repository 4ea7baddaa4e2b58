"""The tokens the bootstrap spawns. Amounts are integers in base units."""

from __future__ import annotations

from dataclasses import dataclass

DENOMINATION = 12
BASE = 10**DENOMINATION


@dataclass(frozen=True)
class TokenSpec:
    """Spawn parameters of one token ledger."""

    ticker: str
    name: str
    denomination: int
    max_supply: int | None  # base units
    owner_powers: str = "All"  # "Bind-Once": never minted by its owner, bound once to its grant authority

    def spawn_tags(self) -> list[tuple[str, str]]:
        """Tags of the spawn message (the ledger module reads them)."""
        tags = [("Name", self.name), ("Ticker", self.ticker), ("Denomination", str(self.denomination)),
                ("Owner-Powers", self.owner_powers)]
        if self.max_supply is not None:
            tags.append(("Max-Supply", str(self.max_supply)))
        return tags


WAR = TokenSpec(ticker="wAR", name="Wrapped AR", denomination=DENOMINATION, max_supply=None)
# wAR stands in for a bridged token: its owner (the operator) mints it, for the demo faucet only.
# Reality's LLAMA: 12 decimals, at most 11,111,111 tokens; no owner can mint it, and the genesis binds the Fed as
# its only grant authority, which seals it.
LLAMA = TokenSpec(ticker="LLAMA", name="Llama Coin", denomination=DENOMINATION, max_supply=11_111_111 * BASE,
                  owner_powers="Bind-Once")
TOKENS = (WAR, LLAMA)
