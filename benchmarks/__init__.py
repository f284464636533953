"""Benchmarks: cache policies head to head (`cache_policies.py`), server load (`serve_load.py`).

Nothing here is imported by `packcache_core` or `server`; numbers are printed, never asserted.
"""
