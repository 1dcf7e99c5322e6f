"""The web dashboard: static files served at `/` by the worker and the hub, on the same port and
over the same API as every other client (`/api/wsFull`, `/query/validate`, `/item`, `/pcaps`,
`/status`, and the exports of kshark.api.export). docs/dashboard.md is the user's guide.

- `assets`: the files in `static/`, read once from the package, with their content types, the
  security headers (a strict Content-Security-Policy) and caching headers.
- `paths`: which request paths are the dashboard's (served without the API token: they are the
  same public code for every install and hold no captured data).
- `routes`: the route handlers the worker's and the hub's apps call.
"""
