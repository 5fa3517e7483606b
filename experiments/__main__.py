"""``python -m experiments --list`` / ``python -m experiments NAME --help``."""

from __future__ import annotations

import argparse
import difflib
import sys

from experiments import EXPERIMENTS, load


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("--list", "-l", "list"):
        print("experiments (python -m experiments NAME --help):")
        width = max(map(len, EXPERIMENTS)) + 1
        for name in sorted(EXPERIMENTS):
            print(f"  {name:<{width}} {load(name).DESCRIPTION}")
        return 0
    if argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    name = argv.pop(0)
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, list(EXPERIMENTS), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        print(f"unknown experiment {name!r}.{hint} Known: {', '.join(sorted(EXPERIMENTS))}", file=sys.stderr)
        return 2
    module = load(name)
    parser = argparse.ArgumentParser(prog=f"python -m experiments {name}", description=module.DESCRIPTION)
    module.add_arguments(parser)
    module.main(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
