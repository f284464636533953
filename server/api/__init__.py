"""The HTTP and websocket API: app factory, routes, schemas, security, streaming, error mapping."""
