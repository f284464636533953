"""Process entry points: the `packcache` CLI, the runtime that wires the server, draining."""
