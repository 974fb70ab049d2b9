"""Audiences: boolean criteria over a user's profile, evaluated in real time by the profile shards (or once, on
demand, for standard audiences), with membership changes delivered to audience outputs.

- `criteria.py`: the definition's criteria tree (pydantic), validated with errors that name the node.
- `evaluate.py`: a tree's truth for one user's facts, and the order audiences are evaluated in.
"""
