"""PackCache Server: an OpenAI-shaped HTTP and websocket API over the PackCache core.

The tree follows the data path of a request:

- `api/`: the FastAPI app (`main.py`), its routes, request and response schemas, the request
  resolver's HTTP side (`params.py`), authentication and body limits, websocket streaming, the
  page's static files, and the one mapping from domain errors to HTTP statuses and close codes.
- `engine/`: the one thread that runs device work: jobs, admission and scheduling against the
  memory budget, and the events it emits.
- `storage/`: job records (SQLite or PostgreSQL) and the files each job writes (MP4, thumbnail).
- `entry/`: process entry points: `packcache serve` / `packcache generate`, the runtime that
  wires engine, storage and metrics together, and graceful draining.

At the top: `settings.py` (every knob, env prefix `PACKCACHE_`), `errors.py` (domain
exceptions, free of HTTP), `metrics.py` (Prometheus, fed from engine events). See `README.md`.
"""
