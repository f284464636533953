"""PackCache core: an exact Lumos-1 port with fixed-size per-request KV caches.

No web, metrics or settings code lives here; `server/` builds on this package.
"""
