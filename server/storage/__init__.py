"""Storage: job records (SQLite or PostgreSQL, `open.py` picks one) and each job's files."""
