"""Rebuild a sweep's summary.md, summary.csv, comparisons.csv and plots from its runs' results.json files.

    python scripts/summarize.py logs/img2txt/multiruns/<stamp> [MORE_FOLDERS...] [--reference NAME]
        [--contrast A:B ...] [--keep-newest] [--no-plots] [--bootstrap N]

Several folders are merged (a sweep and a separate text-baseline sweep); the summary goes into the first.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="sweep folders (or any folders holding runs)")
    parser.add_argument("--reference", default="scratch",
                        help="the group every other group is compared with: a label or strategy name (scratch)")
    parser.add_argument("--contrast", action="append", default=None, metavar="A:B",
                        help="a planned contrast A minus B, Holm-corrected with the rest (repeatable; "
                             "default linear_probe:frozen_random where both ran; none: no contrasts)")
    parser.add_argument("--keep-newest", action="store_true",
                        help="of two runs of the same group and unit, keep the newer instead of refusing")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                        help="bootstrap replicates over units and test examples (0: off; default 2000)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir():
            print(f"error: {folder} is not a folder; give a sweep folder such as logs/img2txt/multiruns/<stamp>",
                  file=sys.stderr)
            return 2
    if args.bootstrap < 0:
        print(f"error: --bootstrap {args.bootstrap}; allowed: 0 (off) or a positive number of replicates",
              file=sys.stderr)
        return 2
    from xfer.report import ReportError, collect, write_summary
    from xfer.report.summary import DEFAULT_CONTRASTS

    runs, _ = collect(args.folders)
    if not runs:
        print(f"error: no results.json under {', '.join(map(str, args.folders))}", file=sys.stderr)
        return 1
    try:
        write_summary(args.folders, plots=not args.no_plots, reference=args.reference,
                      keep_newest=args.keep_newest, bootstrap=args.bootstrap,
                      contrasts=DEFAULT_CONTRASTS if args.contrast is None else args.contrast)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((args.folders[0] / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
