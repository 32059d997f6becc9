-- The lead side of the NATS transport (issue 20).
--
-- A run handed to a NATS server for a worker to take: `broker_at` is when the task message
-- was published (acknowledged by JetStream). Such a run's task waits `queued` until the
-- worker's `launched` result arrives, and the dispatcher never starts it a second time.
-- `instance` is the worker replica that ran it (from its `launched` result): the task's
-- later commands (say, cancel, logs, diff) go to that replica.
ALTER TABLE runs ADD COLUMN broker_at TEXT;
ALTER TABLE runs ADD COLUMN instance TEXT;

-- Where the lead stopped reading a NATS host's results (`delegate.results.<mailbox>.<worker>`
-- in stream DELEGATE_RESULTS): the next sync reads from `nats_seq + 1`. Kept with the URL and
-- worker it belongs to: a host pointed elsewhere starts over (a result read again adds
-- nothing: nonces and offsets decide). Columns of the host's sync row, not a table of their
-- own: the mailbox stays as small as it was (a full local disk leaves little room).
ALTER TABLE host_syncs ADD COLUMN nats_url TEXT;
ALTER TABLE host_syncs ADD COLUMN nats_worker TEXT;
ALTER TABLE host_syncs ADD COLUMN nats_seq INTEGER;
