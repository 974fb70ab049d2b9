"""Fault injection under load: kill -9 of every kind of process, flapping partners, and a ledger that proves
that afterwards every acknowledged batch was delivered (or accounted for), every profile equals a replay of
the accepted batches, and each user's batches reached each output in order."""
