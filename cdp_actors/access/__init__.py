"""Access control, Ray-free and HTTP-free: who is calling and what they may do (issue 15, points 1, 2 and 4).

- `passwords`: console users' passwords (argon2id), generated first passwords.
- `roles`: mParticle's roles, the permissions of every protected endpoint, the table between them, `authorize`.
- `tokens`: OAuth client-credentials bearer tokens (HS256 JWTs under a server key, revocable per client).
- `sessions`: console login sessions (hashed ids, cookie attributes, CSRF tokens, idle and absolute expiry).
- `keys`: input access keys issued once, stored as scrypt hashes, verified through a per-replica cache.

Each module's docstring says how the Serve apps and actors call it and what it costs per request. The order of
a protected request: authenticate (a bearer token → `TokenSigner.verify`, or a session cookie →
`SessionTable.resume` and, for a state change, `check_csrf`) to a set of `Grant`s; look up the route's
`Permission` (`roles.ENDPOINTS`); `authorize(grants, permission, workspace_id)`; then the handler. Unauthorized
and Forbidden map to 401 and 403 in serve_apps/errors.py.
"""
