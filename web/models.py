"""Tables of the site: accounts' wallets and their audit rows (written by services), and the read models
projected from the Fed's log (written only by web.projection)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

ADDRESS_LENGTH = 43  # base64url of 32 bytes: addresses, process and message ids
AMOUNT_DIGITS = 40  # integers in base units; far above any supply
MAX_PETITION_CHARS = 250
MAX_NAME_CHARS = 20


def _amount(**kwargs: object) -> models.DecimalField:
    return models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=0, **kwargs)  # type: ignore[arg-type]


# --- accounts (services.py writes these) ---------------------------------------------------------------


class CustodialWallet(models.Model):
    """The Arweave wallet the site keeps for an account; the JWK is Fernet-encrypted, never stored in clear."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="custodial_wallet")
    address = models.CharField(max_length=ADDRESS_LENGTH, unique=True)
    jwk_encrypted = models.TextField(help_text="Fernet token of the JWK (key derived from SECRET_KEY by HKDF)")
    created_at = models.DateTimeField(auto_now_add=True)
    exported_at = models.DateTimeField(null=True, blank=True, help_text="last download of the JWK by its owner")
    export_count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user} → {self.address}"


class LinkChallenge(models.Model):
    """A one-time nonce the account signs to prove it controls an address."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="link_challenges")
    nonce = models.CharField(max_length=ADDRESS_LENGTH, unique=True)
    created_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)


class LinkedAddress(models.Model):
    """An address whose control an account proved by a signature; its signed API petitions count as the account's."""

    class Proof(models.TextChoices):
        DATA_ITEM = "data-item", "signed ANS-104 data item"
        SIGNATURE = "signature", "RSA-PSS signature"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="linked_addresses")
    address = models.CharField(max_length=ADDRESS_LENGTH, unique=True)
    proof = models.CharField(max_length=12, choices=Proof.choices)
    nonce = models.CharField(max_length=ADDRESS_LENGTH, help_text="the challenge that was signed")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "linked addresses"

    def __str__(self) -> str:
        return f"{self.user} ↔ {self.address}"


class FaucetDrip(models.Model):
    """Audit row of one faucet drip: the operator's wAR Mint to an account's address."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="faucet_drips")
    address = models.CharField(max_length=ADDRESS_LENGTH)
    amount = _amount()
    message_id = models.CharField(max_length=ADDRESS_LENGTH, unique=True, help_text="the Mint message")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=models.Q(amount__gt=0), name="faucet_drip_amount_positive")]


class PetitionRequest(models.Model):
    """Audit row of a petition sent through this site: the wAR Transfer handed to the messenger."""

    class Source(models.TextChoices):
        WEB = "web", "web form"
        API = "api", "API (session)"
        SIGNED = "signed", "API (client-signed data item)"

    class Answer(models.TextChoices):
        WAITING = "", "not evaluated by the wAR ledger yet"
        CREDITED = "credited", "the wAR ledger credited the Fed (the petition is in the Fed's log)"
        REFUSED = "refused", "the wAR ledger refused the transfer"

    message_id = models.CharField(max_length=ADDRESS_LENGTH, unique=True, help_text="the transfer = the petition id")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="petition_requests"
    )
    petitioner = models.CharField(max_length=ADDRESS_LENGTH, db_index=True)
    sender_name = models.CharField(max_length=MAX_NAME_CHARS)
    text = models.CharField(max_length=MAX_PETITION_CHARS)
    offering = _amount()
    source = models.CharField(max_length=8, choices=Source.choices)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The wAR ledger's answer to the transfer, written by the projection in the transaction that projects the
    # ledger's result (web.projection): the petition intake counts the unanswered ones without reading results.
    ledger_answer = models.CharField(max_length=8, choices=Answer.choices, default=Answer.WAITING, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["created_at"], condition=models.Q(ledger_answer=""),
                                name="request_unanswered")]


# --- read models (web.projection writes these; `manage.py web rebuild` recreates them) --------------------


OPEN_STATUSES = ("submitted", "received", "deliberating")  # Petition.Status without a final word


class Petition(models.Model):
    """A petition as the log tells it: the wAR transfer to the Fed, then the Fed's messages about it."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted", "submitted"
        RECEIVED = "received", "received"
        DELIBERATING = "deliberating", "deliberating"
        DECIDED = "decided", "decided"
        REFUNDED = "refunded", "refunded"
        FAILED = "failed", "failed (refunded)"

    id = models.CharField(primary_key=True, max_length=ADDRESS_LENGTH, help_text="the wAR transfer's message id")
    petitioner = models.CharField(max_length=ADDRESS_LENGTH, db_index=True)
    sender_name = models.CharField(max_length=MAX_NAME_CHARS, blank=True)
    text = models.CharField(max_length=MAX_PETITION_CHARS, blank=True)
    offering = _amount(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices)
    grade = models.PositiveSmallIntegerField(null=True, blank=True)
    amount = _amount(null=True, blank=True, help_text="LLAMA granted, base units")
    decision = models.JSONField(null=True, blank=True, help_text="the Petition-Decision data")
    refund_reason = models.CharField(max_length=400, blank=True, help_text="why the offering was refunded")
    submitted_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    # The times above are the log's (the timestamp of the message that began each step). When this node recorded
    # the result that ended the petition's latest step (its evaluation committed): the node's clock, for the
    # timeline and the Fed's expected decision time, never part of the Fed's history.
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-submitted_at", "-received_at", "id"]
        indexes = [
            # The Fed's backlog is counted on every petition submission: only the open petitions are indexed.
            models.Index(fields=["status"], condition=models.Q(status__in=OPEN_STATUSES), name="petition_open"),
            # Its recent decision times: the latest finished petitions.
            models.Index(fields=["finished_at"], name="petition_finished"),
        ]

    def __str__(self) -> str:
        return f"petition {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        """Decided, refunded or failed: nothing more will change but the grant's confirmation."""
        return self.status in (self.Status.DECIDED, self.Status.REFUNDED, self.Status.FAILED)


class Vote(models.Model):
    """One governor's vote on a petition (Petition-Vote)."""

    petition = models.ForeignKey(Petition, on_delete=models.CASCADE, related_name="votes")
    governor_index = models.PositiveSmallIntegerField()
    governor = models.CharField(max_length=32)
    grade = models.PositiveSmallIntegerField(null=True, blank=True,
                                             help_text="none for a sentinel, or when the reply was invalid")
    veto = models.BooleanField(null=True, blank=True, help_text="a sentinel's verdict: true vetoes (grade 0)")
    reason = models.TextField(blank=True)
    valid = models.BooleanField(default=True, help_text="false: the reply did not follow the grammar (petition failed)")
    raw_output = models.TextField(blank=True)
    detail = models.JSONField(help_text="the whole vote record (order, examples, tokens, stop, model)")
    voted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, help_text="when this node recorded the vote")

    class Meta:
        ordering = ["petition", "governor_index"]
        constraints = [
            models.UniqueConstraint(fields=["petition", "governor_index"], name="vote_petition_governor_unique")
        ]


class Grant(models.Model):
    """LLAMA granted for a decided petition, and whether the LLAMA ledger confirmed the mint."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        GRANTED = "granted", "granted"
        FAILED = "failed", "failed"

    petition = models.OneToOneField(Petition, primary_key=True, on_delete=models.CASCADE, related_name="grant")
    recipient = models.CharField(max_length=ADDRESS_LENGTH, db_index=True)
    amount = _amount()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    error = models.CharField(max_length=300, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True, db_index=True)
    decided_nonce = models.BigIntegerField(help_text="the Fed's nonce of the decision: the order grants were sent")
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-decided_at", "petition_id"]
        constraints = [models.CheckConstraint(condition=models.Q(amount__gt=0), name="grant_amount_positive")]


class Projection(models.Model):
    """How far the read models have read a process's results: the next nonce to apply."""

    process_id = models.CharField(primary_key=True, max_length=ADDRESS_LENGTH)
    next_nonce = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)


class VerifyRun(models.Model):
    """A replay-verify of a process asked for by a staff member, and what it found."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "replaying"
        MATCH = "match", "every result and state hash matches"
        DIVERGED = "diverged", "diverged"
        FAILED = "failed", "could not run"

    process_id = models.CharField(max_length=43, db_index=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    checked = models.BigIntegerField(default=0)
    total = models.BigIntegerField(default=0, help_text="messages in the log when the replay began")
    divergence = models.JSONField(null=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-created_at"]

    @property
    def is_final(self) -> bool:
        """Nothing more will change: matched, diverged or could not run."""
        return self.status not in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def percent(self) -> int:
        """How far the replay has come, 0-100."""
        return min(100, self.checked * 100 // self.total) if self.total else 0
