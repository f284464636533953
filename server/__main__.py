"""`python -m server ...` is the `packcache` command (see `server/entry/cli.py`)."""

import sys

from server.entry.cli import main

sys.exit(main())
