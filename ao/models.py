"""Tables of the AO runtime: the embedded permaweb store, the scheduler's log, the messenger's pushes."""

from __future__ import annotations

from django.db import models


class Block(models.Model):
    """A block of the embedded store's chain: each stored L1 transaction is mined into its own block."""

    height = models.BigIntegerField(primary_key=True)
    indep_hash = models.CharField(max_length=64, unique=True)
    previous = models.CharField(max_length=64, blank=True)
    timestamp = models.BigIntegerField(help_text="seconds since the epoch")

    class Meta:
        ordering = ["height"]


class Entry(models.Model):
    """A data item or L1 transaction kept by the embedded store."""

    class Kind(models.TextChoices):
        ITEM = "item", "ANS-104 data item"
        TX = "tx", "L1 transaction"

    seq = models.BigAutoField(primary_key=True, help_text="store order, for stable paging")
    id = models.CharField(max_length=43)
    kind = models.CharField(max_length=4, choices=Kind.choices)
    signature_type = models.PositiveSmallIntegerField()
    owner = models.TextField(help_text="base64url public key")
    owner_address = models.CharField(max_length=43)
    target = models.CharField(max_length=43, blank=True)
    anchor = models.CharField(max_length=64, blank=True)
    data_size = models.BigIntegerField()
    data_root = models.CharField(max_length=43, blank=True)
    raw = models.BinaryField(null=True, help_text="serialized data item (items only)")
    header = models.JSONField(null=True, help_text="L1 transaction header (transactions only)")
    blob = models.CharField(max_length=64, blank=True, help_text="content address of the data file (L1)")
    weave_offset = models.BigIntegerField(
        null=True, unique=True, help_text="absolute offset of the last data byte in the weave (L1 with data)"
    )
    block = models.ForeignKey(Block, null=True, on_delete=models.PROTECT, related_name="entries")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "entries"
        # Indexes are declared here, not with db_index/unique on the fields: on PostgreSQL those add a second,
        # pattern-matching index to every text column, which nothing here queries and every insert pays for.
        indexes = [models.Index(fields=["owner_address"], name="entry_owner_address"),
                   models.Index(fields=["target"], name="entry_target")]
        constraints = [
            models.UniqueConstraint(fields=["id"], name="entry_id_unique"),
            models.CheckConstraint(condition=models.Q(data_size__gte=0), name="entry_data_size_nonnegative"),
            models.CheckConstraint(
                condition=(models.Q(kind="item", raw__isnull=False) | models.Q(kind="tx", header__isnull=False)),
                name="entry_kind_has_body",
            ),
        ]


class EntryTag(models.Model):
    """One tag of an entry, in order, for queries by name and value."""

    # Found by entry through the (entry, position) constraint's index: no index of its own.
    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="tag_rows", db_index=False)
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=1024)
    value = models.TextField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["entry", "position"], name="entry_tag_position_unique")]
        indexes = [models.Index(fields=["name", "value"], name="entry_tag_name_value")]


class Chunk(models.Model):
    """One 256 KiB (or smaller) chunk of an L1 transaction, with its Merkle proof."""

    entry = models.ForeignKey(Entry, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    start = models.BigIntegerField()
    end = models.BigIntegerField()
    data_path = models.BinaryField()

    class Meta:
        ordering = ["entry", "index"]
        constraints = [
            models.UniqueConstraint(fields=["entry", "index"], name="chunk_index_unique"),
            models.CheckConstraint(condition=models.Q(end__gt=models.F("start")), name="chunk_nonempty"),
        ]


class Process(models.Model):
    """A process known to this scheduler, with the head of its log."""

    id = models.CharField(primary_key=True, max_length=43)
    owner_address = models.CharField(max_length=43, db_index=True)
    module = models.CharField(max_length=43)
    scheduler = models.CharField(max_length=43)
    epoch = models.PositiveIntegerField(default=0)
    next_nonce = models.BigIntegerField(default=0)
    last_assignment = models.CharField(max_length=43, blank=True)
    last_hash_chain = models.CharField(max_length=43, blank=True)
    last_timestamp = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "processes"


class Assignment(models.Model):
    """One slot of a process's log: which message, at which nonce, signed by the scheduler."""

    id = models.CharField(primary_key=True, max_length=43, help_text="the assignment item's id")
    # Found by process through the (process, nonce) constraint's index.
    process = models.ForeignKey(Process, on_delete=models.PROTECT, related_name="assignments", db_index=False)
    nonce = models.BigIntegerField()
    epoch = models.PositiveIntegerField()
    message = models.ForeignKey(Entry, on_delete=models.PROTECT, related_name="assignments")
    hash_chain = models.CharField(max_length=43)
    block_height = models.BigIntegerField()
    timestamp = models.BigIntegerField(help_text="milliseconds since the epoch")
    raw = models.BinaryField(help_text="the signed assignment data item")

    class Meta:
        ordering = ["process", "nonce"]
        constraints = [
            models.UniqueConstraint(fields=["process", "nonce"], name="assignment_nonce_unique"),
            models.UniqueConstraint(fields=["process", "message"], name="assignment_message_unique"),
            models.CheckConstraint(condition=models.Q(nonce__gte=0), name="assignment_nonce_nonnegative"),
        ]


class Push(models.Model):
    """An outbox message the messenger must deliver exactly once: keyed by (process, nonce, index).

    Every outbox message of a committed result is recorded, whatever its target. The signed item is built at
    delivery (its id is fixed by (process, nonce, index): Ed25519 signatures are deterministic). A target that
    is a process on this scheduler gets it in its log (delivered); any other target (a wallet, a process of
    another scheduler) gets the item kept in this node's store, where GraphQL finds it by recipient (stored).
    """

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        DELIVERED = "delivered", "delivered to the target's log"
        STORED = "stored", "no process here: kept in the store for its recipient"
        FAILED = "failed", "failed"

    # Found by process through the (process, nonce, index) constraint's index.
    process = models.ForeignKey(Process, on_delete=models.PROTECT, related_name="pushes", db_index=False)
    nonce = models.BigIntegerField()
    index = models.PositiveIntegerField()
    target = models.CharField(max_length=43)
    pushed_for = models.CharField(max_length=43, blank=True)
    # Fixed by (process, nonce, index), so as unique as they are; nothing looks a push up by it.
    item_id = models.CharField(max_length=43, null=True)
    raw = models.BinaryField(null=True, help_text="the signed item (rows of earlier versions; now built at delivery "
                                                  "from the result's outbox, and kept in the store)")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    claimed_by = models.CharField(max_length=64, blank=True)
    claimed_until = models.DateTimeField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["process", "nonce", "index"]
        constraints = [
            models.UniqueConstraint(fields=["process", "nonce", "index"], name="push_identity_unique"),
        ]
        indexes = [models.Index(fields=["state", "process"], name="push_state_process")]


class Evaluation(models.Model):
    """The compute unit's cursor over a process's log, and its control: lease, queue, faults.

    ``next_nonce``/``state_hash``/``window_start`` are facts of the log (what has been evaluated). The rest is
    this node's bookkeeping: who holds the evaluation lease, whether an evaluation or delivery task is queued
    (at most one of each per process), and the last host fault with its retry schedule.
    """

    process = models.OneToOneField(Process, primary_key=True, on_delete=models.PROTECT, related_name="evaluation")
    next_nonce = models.BigIntegerField(default=0)
    state_hash = models.CharField(max_length=64)
    window_start = models.BigIntegerField(default=0, help_text="where the instance window of next_nonce began")
    lease_holder = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True)
    queued_at = models.DateTimeField(null=True, help_text="an evaluation task is queued since")
    delivery_queued_at = models.DateTimeField(null=True, help_text="a delivery task is queued since")
    fault = models.TextField(blank=True, help_text="the last host fault, until a batch commits")
    fault_count = models.PositiveIntegerField(default=0)
    fault_at = models.DateTimeField(null=True)
    retry_at = models.DateTimeField(null=True)
    stalled_at = models.DateTimeField(null=True, help_text="set once the fault outlasted the retries")
    updated_at = models.DateTimeField(auto_now=True)


class StateEntry(models.Model):
    """One key of a process's state (the host key-value store behind the WIT `state` imports)."""

    process = models.ForeignKey(Process, on_delete=models.PROTECT, related_name="state_entries")
    key = models.CharField(max_length=1024)
    value = models.TextField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["process", "key"], name="state_key_unique")]


class Result(models.Model):
    """The result of evaluating one message: AO's {Messages, Spawns, Assignments, Output, Error}."""

    # Found by process through the (process, nonce) constraint's index.
    process = models.ForeignKey(Process, on_delete=models.PROTECT, related_name="results", db_index=False)
    nonce = models.BigIntegerField()
    message_id = models.CharField(max_length=43)
    body = models.JSONField()
    error = models.TextField(blank=True)
    gas_used = models.BigIntegerField()
    state_hash = models.CharField(max_length=64)
    logs = models.JSONField(default=list)
    undo = models.JSONField(null=True, help_text="values the message overwrote (key: previous value or null)")
    pushed_for = models.CharField(max_length=43, blank=True,
                                  help_text="the root message its outbox's pushes name (Pushed-For); blank if none")
    origin = models.CharField(max_length=140, blank=True,
                              help_text="for a genuine push: the outbox entry it carries (process/nonce/index)")
    evaluated_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["process", "nonce"]
        indexes = [models.Index(fields=["message_id"], name="result_message_id")]
        constraints = [
            models.UniqueConstraint(fields=["process", "nonce"], name="result_nonce_unique"),
            # A push is accepted once: a second signature over the same outbox entry is not a second message.
            models.UniqueConstraint(fields=["process", "origin"], condition=~models.Q(origin=""),
                                    name="result_origin_once"),
        ]


class Checkpoint(models.Model):
    """A memory snapshot of a core (memory64) process after a nonce: where a restarted worker resumes."""

    process = models.ForeignKey(Process, on_delete=models.PROTECT, related_name="checkpoints")
    nonce = models.BigIntegerField(help_text="the last message included")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField(help_text="encoded snapshot bytes")
    memory_size = models.BigIntegerField(help_text="linear memory bytes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["process", "-nonce"]
        constraints = [models.UniqueConstraint(fields=["process", "nonce"], name="checkpoint_nonce_unique")]


class Completion(models.Model):
    """An LLM completion computed ahead of the message that will ask for it (``ao.extensions.llm_ahead``).

    Not a fact of the log: a cache of work. Keyed by what determines the output (the request, the model's
    sha256, the engine fingerprint and context shape), so an evaluation that asks for the same request gets
    the very answer it would have computed; replay (``ao.verify``) never reads it and computes again.
    """

    class State(models.TextChoices):
        PENDING = "pending", "waiting for a worker"
        CLAIMED = "claimed", "a worker computes it"
        DONE = "done", "computed"

    key = models.CharField(max_length=64, primary_key=True)
    process_id = models.CharField(max_length=43, help_text="the process whose message asked for it ahead")
    nonce = models.BigIntegerField(help_text="the message that asked for it ahead")
    model_id = models.CharField(max_length=43)
    model_sha256 = models.CharField(max_length=64)
    request = models.JSONField(help_text="prefix, parts, grammar, max_tokens")
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    claimed_by = models.CharField(max_length=64, blank=True)
    claimed_until = models.DateTimeField(null=True)
    output = models.JSONField(null=True, help_text="the completion, once computed")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["state", "created_at"], name="completion_state_age")]
