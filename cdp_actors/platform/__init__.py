"""The Platform API's domain, Ray-free and HTTP-free (https://docs.mparticle.com/developers/apis/platform/overview/).

- `resources`: the workspace configuration as the Platform API shows it (accounts, workspaces, apps and their app
  platforms = our inputs, services = output kinds, outputs, connections, users), secrets never shown (masked, or
  for access keys not at all); request bodies turned into the typed changes of `cdp_actors/control/changes.py`, and
  the changes' refusals renamed to the request's fields.
- `http`: the `data`/`errors` envelope, `?accountId=`, `If-Match` and CORS.

`serve_apps/platform.py` is the thin HTTP face over both: authenticate, rate-limit, authorize, turn the body into a
change, `control.apply`, answer.
"""
