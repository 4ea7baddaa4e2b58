"""Every error the site's services raise, in one hierarchy; `status` is the HTTP status an endpoint answers with."""

from __future__ import annotations

from collections.abc import Mapping


class WebError(Exception):
    """Base of the site's errors: the message tells the user what to do."""

    status = 400


class InvalidInput(WebError):
    """Input that breaks a rule; `fields` maps field names to their messages (nothing was sent)."""

    def __init__(self, message: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = dict(fields or {})


class RateLimited(WebError):
    """Over a per-account limit; `retry_after` in seconds when known."""

    status = 429

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FedBusy(RateLimited):
    """The Fed's backlog would keep a new petition waiting longer than FED_MAX_WAIT_S; nothing was sent."""

    status = 503


class FaucetDisabled(WebError):
    """The faucet is turned off on this deployment."""

    status = 403


class NotRunning(WebError):
    """The Fed or a ledger is not spawned on this node yet."""

    status = 503


class InsufficientBalance(WebError):
    """The account cannot pay the offering."""

    status = 409


class LinkRefused(WebError):
    """A proof of address control that does not hold."""


class WalletUnavailable(WebError):
    """The custodial wallet cannot be decrypted (the secret key changed without SECRET_KEY_FALLBACKS)."""

    status = 500
