"""The token ledgers (wAR, LLAMA): their process module and the node's record of them."""

from django.apps import AppConfig


class LedgerConfig(AppConfig):
    """Ledger app."""

    name = "ledger"
