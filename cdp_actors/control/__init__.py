"""The workspace configuration as the runtime's own durable, versioned store, changed live (issue 15, point 3).

What the package offers (Ray-free, HTTP-free):
- `changes`: the typed changes the Platform API makes (add, update, remove an input = app platform with its key
  and secret, an output = service with its settings, a connection), applied by a pure function through the
  workspace's pydantic models; a refusal is a `BadRequest` naming the request's field (`$.settings.url`) or a
  `NotFound`. Ids are never reused.
- `store.ConfigStore`: LMDB under `<data dir>/control`. `seed_from(yaml)` only when empty; `current()` →
  `(version, WorkspaceConfig)`; `apply(change, expected_version, actor)` in one synced transaction, a stale
  version refused as `Conflict` (409); `history()` (who, when, which change, which paths; never values);
  `snapshot(version)` of the last 100; `changed_since(version)` for watchers; `export_yaml()`, which
  `load_workspace` reads back equal. Secrets pass through a `SecretSealer` (`sealer.WorkspaceSealer`: encrypted
  with the operator's key) on every write and read.
- `watcher.ConfigWatcher`: per process, one `ConfigSnapshot` (version, config, what the process derives from it)
  per batch; a new version is taken between batches, never inside one.

How the next session wires it:
- Owner: a new `Control` actor (`cdp-control`, detached, on the head next to the alert store, pinned the same
  way, `max_restarts=-1`), a thin shell over `ConfigStore`: `current`, `changed_since`, `apply`, `history`,
  `export_yaml`. Not the alert store: that actor takes every forwarder's alert flushes, and a configuration
  change must not queue behind them (nor alerts behind a synced change). The audit log (`audit.py`) belongs to
  it too, in the store's own LMDB environment: `apply` writes the audit entry (actor, action, target, before/after
  item, masked) in the change's own transaction (owner.py), so neither is ever stored without the other.
- `ensure_runtime` creates Control first and calls `seed_from(<--config>)`, then starts every other actor with
  `control.current()` rather than the file. When the store is seeded and the file differs, `cdp serve` warns
  once: the store is the configuration, `cdp config export` writes it back to a file. `cdp config export` asks
  the running Control actor, or opens the store itself when nothing runs (LMDB allows a second reader process).
- The Platform API replica turns a request into a change, `await control.apply.remote(change, None, who)`,
  and `offer`s the returned version to its own watcher (so the same replica reads its write at once);
  `expected_version` comes from an `If-Match` header when a client sends one, else None (the change is still
  validated atomically against the current version).
- New versions reach processes by polling a version counter, not by push: every process holding a watcher runs
  one owned background loop (`tasks.keep_running`) that every CONFIG_POLL_INTERVAL_S (0.5 s) calls
  `control.changed_since.remote(watcher.version)`: None almost always (one small actor call, ~1 ms, twice a
  second per process), else the new `(version, config)` to `offer`. Push was rejected: Control would have to
  track every Serve replica and forwarder (replicas come and go), and a push lost to a restarting process needs
  a retry anyway; a poll heals by itself after any restart and bounds the delay at 0.5 s + one call + one
  `derive`, inside the promised second. These watchers are built without `read_version`/`load` (a blocking
  `ray.get` on the hot path is not an option); the synchronous mode is for the Control actor's own process
  and for tests.
- The sync ProfileShard gets no loop of its own: the dispatcher, which holds a watcher, stamps each
  `apply(records, ...)` call with its snapshot's version and adds the configuration when that version is newer
  than the one it last sent to this shard (and after a shard restart). So a chunk is resolved, applied and turned
  into outbox rows under one version. Forwarders take one snapshot per prepared request (or coalesced group):
  a batch's requests are built by one adapter of one version. Adding an output means new outbox lanes in the
  shard's `HandOff` and a new session, breaker and slot in `Delivery`; `derive` rebuilds what changed and keeps
  the sessions and breakers of outputs whose settings did not change.
- What stays fixed until a restart: `runtime` (actor counts, placement, Serve replica options),
  `limits.max_queued_requests`, `identity.strategy` (it gives the stored index its meaning) and `telemetry`.
  The changes here touch only inputs, outputs and connections.

Hot-path costs (2-core machine running CI at load ~6, `python -m benchmarks.config_store`, 21 inputs/outputs):
`snapshot()` between polls 0.12–0.19 µs per batch; `current()` at an unchanged version 1.0–2.2 µs and
`version()` 1.2–3.2 µs (one LMDB read transaction); a poll that finds the same version 1.5–3.6 µs; a new version
costs its reader 0.56–0.70 ms (decode, validate, build 21 adapters; 0.07 ms for the demo workspace), once per
version; `apply()` 1.8–3.8 ms, most of it the synced commit.
"""
