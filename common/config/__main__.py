"""`python -m common.config [--write README.md]`: print (or update in README) the config key tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config.docs import SECTIONS, marked, update


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m common.config", description=__doc__)
    p.add_argument("--write", metavar="README", help="regenerate the marked tables in this file")
    args = p.parse_args(argv)
    if args.write:
        path = Path(args.write)
        path.write_text(update(path.read_text()))
    else:
        print("\n\n".join(marked(name) for name in SECTIONS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
