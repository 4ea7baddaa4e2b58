"""The compute unit's writes: evaluate each process's log in order, exactly once, outside any transaction.

- ``context``: what stays the same for every message of a process (module, limits, extensions).
- ``message``: one message's evaluation, pure but for the runtime: its result, state writes, outbox.
- ``batch``: a process claimed by a lease, a batch evaluated with no transaction open, then committed in one
  short transaction guarded by compare-and-set on the cursor; host faults stall, never record.
- ``lease``: the evaluation lease (a row with holder and expiry, renewed while working).
- ``pushes``: outbox messages recorded with their result, delivered exactly once.
- ``health``: host faults, retries with backoff, the stalled state operators see.
- ``sweep``: re-queues what a broker outage or a killed worker lost.

Work is requested through ``ao.dispatch`` (tasks enqueued on commit by name, at most one queued per process).
"""
