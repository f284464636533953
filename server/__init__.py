"""PackCache Server: an OpenAI-shaped HTTP and websocket API over the PackCache core.

Layout: `main.py` (app factory), `settings.py`, `routes/`, `engine.py` (the one thread that runs
device work) with `scheduler.py`, `recorder.py` + `store.py` (files and job metadata),
`metrics.py`, `security.py`, `cli.py` (`packcache serve`). See `README.md` here.
"""
