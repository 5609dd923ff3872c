"""How much a per-item split leaks through groups: for each split rule (by item, by group), the share
of test items whose group also has training items, and the accuracy of a model-free "predictor"
that answers each test item with the majority label of its group's training items (the majority
class when its group has none). A leak-free split leaves that predictor at the majority-class rate.

    python scripts/group_leak.py                                   # rt_sentiment, grouped by movie
    python scripts/group_leak.py --reader csv --path reviews.csv --group-column author \\
        --reader-arg text_column=body --reader-arg label_column=stars
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict

import numpy as np


def group_majority(train_y: np.ndarray, train_g: np.ndarray, test_y: np.ndarray, test_g: np.ndarray
                   ) -> tuple[float, float]:
    """(share of test items whose group is in train, accuracy of the train-group-majority rule)."""
    votes: dict[object, Counter] = defaultdict(Counter)
    for y, g in zip(train_y.tolist(), train_g.tolist()):
        votes[g][y] += 1
    fallback = Counter(train_y.tolist()).most_common(1)[0][0]
    seen = np.array([g in votes for g in test_g.tolist()])
    guess = np.array([votes[g].most_common(1)[0][0] if g in votes else fallback for g in test_g.tolist()])
    return float(seen.mean()), float((guess == test_y).mean())


def leave_one_out(y: np.ndarray, g: np.ndarray) -> float:
    """Accuracy of answering each item with the majority label of the OTHER items of its group (items
    alone in their group, and ties, get the overall majority class)."""
    n_classes = int(y.max()) + 1
    keys, inv = np.unique(g, return_inverse=True)
    counts = np.zeros((len(keys), n_classes), dtype=np.int64)
    np.add.at(counts, (inv, y), 1)
    others = counts[inv].copy()
    others[np.arange(len(y)), y] -= 1
    overall = np.bincount(y, minlength=n_classes).argmax()
    top = others.max(axis=1)
    unique_top = (others == top[:, None]).sum(axis=1) == 1
    guess = np.where((top > 0) & unique_top, others.argmax(axis=1), overall)
    return float((guess == y).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", default="rt_sentiment", help="a reader of xfer.data.readers.READERS")
    parser.add_argument("--path", default=None, help="the data file or folder (default: the reader's own)")
    parser.add_argument("--group-column", default="movie_name", help="the column of group ids")
    parser.add_argument("--reader-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="more reader arguments, e.g. text_column=body")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--split-seeds", default="0,1,2", help="comma-separated split seeds")
    args = parser.parse_args(argv)

    from xfer.data.errors import DataError
    from xfer.data.readers import READERS
    from xfer.data.splits import grouped_split, stratified_split

    if args.reader not in READERS:
        print(f"error: --reader={args.reader!r} is unknown; allowed: {', '.join(sorted(READERS))}", file=sys.stderr)
        return 2
    extra = dict(kv.split("=", 1) for kv in args.reader_arg if "=" in kv)
    try:
        raw = READERS[args.reader](args.path, group_column=args.group_column, **extra)
    except TypeError:
        print(f"error: reader {args.reader!r} takes no group_column; allowed: csv, jsonl, hf, rt_sentiment",
              file=sys.stderr)
        return 2
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    y = np.concatenate([np.asarray(v[1]) for v in raw.splits.values()])
    g = np.concatenate([np.asarray(raw.groups[s]) for s in raw.splits]).astype(str)
    sizes = np.unique(g, return_counts=True)[1]
    majority = np.bincount(y).max() / len(y)
    print(f"{args.reader}: {len(y)} items in {len(sizes)} groups of '{args.group_column}' (median "
          f"{int(np.median(sizes))} items per group); majority class {100 * majority:.1f}%")
    print(f"leave-one-out group majority over all items: {100 * leave_one_out(y, g):.1f}%")
    print("| split | split_seed | test items whose group is in train | train-group-majority test acc |")
    print("|---|---:|---:|---:|")
    try:
        seeds = [int(s) for s in args.split_seeds.split(",")]
    except ValueError:
        print(f"error: --split-seeds={args.split_seeds}; allowed: comma-separated integers such as 0,1,2",
              file=sys.stderr)
        return 2
    for seed in seeds:
        for name, rule in (("by item", stratified_split), ("by group", None)):
            if rule is None:
                tr, _, te = grouped_split(y, g, args.val_fraction, args.test_fraction, seed)
            else:
                tr, _, te = rule(y, args.val_fraction, args.test_fraction, seed)
            seen, acc = group_majority(y[tr], g[tr], y[te], g[te])
            print(f"| {name} | {seed} | {100 * seen:.1f}% | {100 * acc:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
