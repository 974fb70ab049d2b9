"""Calculated attributes (CAs): per-user aggregates over events, kept incrementally by the profile shards.

- `definition.py`: the Platform API v2 definition (https://docs.mparticle.com/developers/apis/platform/ , the
  calculated attributes section) as pydantic models, validated with errors that name the field.
- `conditions.py`: the condition operators (shared with audience criteria).
- `engine.py`: the per-(user, CA) state, folded one batch at a time, aged by the clock, read as a string value.
- `seed.py`: the CA Seeding API's seeds as states to combine with what the platform computes.
- `seeding.py`: the CA Seeding API's requests checked against the active definitions, as eventless batches.

All of it is pure: no Ray, no storage, no clock but the `now_ms` passed in.
"""
