"""Rebuild a sweep's summary.md, summary.csv, comparisons.csv and plots from its runs' results.json files.

    python scripts/summarize.py logs/img2txt/multiruns/<stamp> [MORE_FOLDERS...] [--reference NAME]
        [--contrast A:B ...] [--alpha A] [--metric test/acc|test/f1] [--keep-newest] [--no-plots] [--bootstrap N]

Several folders are merged (a sweep and a separate text-baseline sweep); the summary goes into the first.
    python scripts/summarize.py --study logs/study/<preset> [--out docs/results.md]
rewrites a study's page and its cells' summaries (docs/results/<preset>/) from the study's folders alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from xfer.errors import ReportError
    from xfer.report.settings import (DEFAULT_ALPHA, DEFAULT_CONTRASTS, DEFAULT_METRIC, DEFAULT_REFERENCE, METRICS,
                                      check_alpha, check_metric)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="*", help="sweep folders (or any folders holding runs)")
    parser.add_argument("--study", type=Path, default=None, metavar="FOLDER",
                        help="a study's folder (logs/study/<preset>): rewrite its results page instead")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "results.md",
                        help="with --study: the page written (default docs/results.md)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help=f"the group every other group is compared with: a label or strategy name "
                             f"({DEFAULT_REFERENCE})")
    parser.add_argument("--contrast", action="append", default=None, metavar="A:B",
                        help="a planned contrast A minus B, Holm-corrected with the rest (repeatable; "
                             f"default {', '.join(DEFAULT_CONTRASTS)} where both ran; none: no contrasts)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, metavar="A",
                        help=f"significance level of the Holm-adjusted p-values, 0 < A < 1 (default {DEFAULT_ALPHA})")
    parser.add_argument("--metric", default=DEFAULT_METRIC, metavar="M",
                        help=f"the test score compared: {' | '.join(METRICS)} (default {DEFAULT_METRIC})")
    parser.add_argument("--keep-newest", action="store_true",
                        help="of two runs of the same group and unit, keep the newer instead of refusing")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                        help="bootstrap replicates over units and test examples (0: off; default 2000)")
    args = parser.parse_args(argv)
    if args.study is not None:
        if args.folders:
            print("error: --study takes no sweep folders; give either --study FOLDER or sweep folders", file=sys.stderr)
            return 2
        if not (args.study / "study.json").is_file():
            print(f"error: --study {args.study}: no study.json there; allowed: a folder made by make study, "
                  f"such as logs/study/cpu", file=sys.stderr)
            return 2
        from xfer.report.study import write_page

        try:
            print(f"wrote {write_page(args.study, args.out)}")
        except ReportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if not args.folders:
        print("error: no sweep folder given; give one such as logs/img2txt/multiruns/<stamp>, or --study FOLDER",
              file=sys.stderr)
        return 2
    for folder in args.folders:
        if not folder.is_dir():
            print(f"error: {folder} is not a folder; give a sweep folder such as logs/img2txt/multiruns/<stamp>",
                  file=sys.stderr)
            return 2
    if args.bootstrap < 0:
        print(f"error: --bootstrap {args.bootstrap}; allowed: 0 (off) or a positive number of replicates",
              file=sys.stderr)
        return 2
    try:
        check_alpha(args.alpha, "--alpha")
        check_metric(args.metric, "--metric")
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from xfer.report import collect, write_summary

    runs, _ = collect(args.folders)
    if not runs:
        print(f"error: no results.json under {', '.join(map(str, args.folders))}", file=sys.stderr)
        return 1
    try:
        write_summary(args.folders, plots=not args.no_plots, reference=args.reference,
                      keep_newest=args.keep_newest, bootstrap=args.bootstrap, alpha=args.alpha, metric=args.metric,
                      contrasts=DEFAULT_CONTRASTS if args.contrast is None else args.contrast)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((args.folders[0] / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
