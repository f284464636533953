"""HTTP and websocket routes: `videos` (REST), `stream` (websocket), `health` (probes, metrics)."""
