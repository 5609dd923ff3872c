"""Rebuild a sweep's summary.md, summary.csv and plots from its runs' results.json files.

    python scripts/summarize.py logs/img2txt/multiruns/<stamp>
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a sweep folder (or any folder holding runs)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder; give a sweep folder such as logs/img2txt/multiruns/<stamp>",
              file=sys.stderr)
        return 2
    from xfer.report import write_summary

    s = write_summary(args.folder, plots=not args.no_plots)
    if not s.runs and not s.failed:
        print(f"error: no results.json under {args.folder}", file=sys.stderr)
        return 1
    print((args.folder / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
