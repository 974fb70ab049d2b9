"""Fault injection under load: kill -9 of every kind of process, flapping partners, and a ledger that proves
invariants 1 to 3 (DESIGN.md §2) afterwards."""
