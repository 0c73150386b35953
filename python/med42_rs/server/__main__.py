"""``python -m med42_rs.server ARGS`` is ``med42 serve ARGS``."""

from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve", *sys.argv[1:]]))
