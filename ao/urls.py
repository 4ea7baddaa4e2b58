"""URL maps of the AO units; each is mounted under its own base URL (see README)."""

from django.urls import path, register_converter

from ao import api


class TxIdConverter:
    """A base64url id of 43 characters."""

    regex = r"[A-Za-z0-9_-]{43}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(TxIdConverter, "txid")

mu_urls = ([path("", api.mu_root, name="root")], "mu")

su_urls = (
    [
        path("", api.su_root, name="root"),
        path("timestamp", api.su_timestamp, name="timestamp"),
        path("processes/<txid:process_id>", api.su_process, name="process"),
        path("<txid:process_id>/latest", api.su_latest, name="latest"),
        path("<txid:item_id>", api.su_log_or_message, name="log"),
    ],
    "su",
)

gateway_urls = (
    [
        path("info", api.gw_info, name="info"),
        path("graphql", api.gw_graphql, name="graphql"),
        path("tx/<txid:tx_id>", api.gw_tx, name="tx"),
        path("tx/<txid:tx_id>/offset", api.gw_tx_offset, name="tx-offset"),
        path("chunk/<int:offset>", api.gw_chunk, name="chunk"),
        path("raw/<txid:item_id>", api.gw_raw, name="raw"),
        path("<txid:item_id>", api.gw_data, name="data"),
    ],
    "gateway",
)

cu_urls = (
    [
        path("", api.cu_root, name="root"),
        path("result/<txid:message_id>", api.cu_result, name="result"),
        path("results/<txid:process_id>", api.cu_results, name="results"),
        path("dry-run", api.cu_dry_run, name="dry-run"),
    ],
    "cu",
)
