"""How much a per-item split leaks through groups: for each split rule (by item, by group), the share
of test items whose group also has training items, and the accuracy of a model-free "predictor"
that answers each test item with the majority label of its group's training items (the majority
class when its group has none). A leak-free split leaves that predictor at the majority-class rate.

    python scripts/group_leak.py                                   # rt_sentiment, grouped by movie
    python scripts/group_leak.py --reader csv --path reviews.csv --group-column author \\
        --reader-arg text_column=body --reader-arg label_column=stars

``--reader`` is a data set (a file of conf/source or conf/target: its reader function, with that
function's own defaults) or a reader function's short name (``csv_text`` for ``read_csv_text``).
"""
from __future__ import annotations

import argparse
import inspect
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

CONF = Path(__file__).resolve().parents[1] / "conf"


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


def config_readers() -> dict[str, Callable]:
    """Each data set config's reader function (its reader node's _target_), by the config's name."""
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    found = {}
    for file in sorted([*(CONF / "source").glob("*.yaml"), *(CONF / "target").glob("*.yaml")]):
        target = OmegaConf.load(file).get("reader", {}).get("_target_")
        if target:
            found.setdefault(file.stem, get_object(target))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", default="rt_sentiment",
                        help="a data set of conf/source or conf/target, or a reader's short name (csv_text)")
    parser.add_argument("--path", default=None, help="the data file or folder (default: the reader's own)")
    parser.add_argument("--group-column", default="movie_name", help="the column of group ids")
    parser.add_argument("--reader-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="more reader arguments, e.g. text_column=body")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--split-seeds", default="0,1,2", help="comma-separated split seeds")
    args = parser.parse_args(argv)

    from xfer.data import readers
    from xfer.data.splits import grouped_split, stratified_split
    from xfer.errors import DataError

    known = {**readers.known(), **config_readers()}
    if args.reader not in known:
        print(f"error: --reader={args.reader!r} is unknown; allowed: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    reader = known[args.reader]
    if not readers.takes(reader, "group_column"):
        grouped = sorted(n for n, fn in config_readers().items() if readers.takes(fn, "group_column"))
        print(f"error: reader {args.reader!r} takes no group_column; allowed: {', '.join(grouped)}", file=sys.stderr)
        return 2
    extra = dict(kv.split("=", 1) for kv in args.reader_arg if "=" in kv)
    bad = sorted(set(extra) - set(inspect.signature(reader).parameters) - {"path", "group_column"})
    if bad:
        allowed = sorted(set(inspect.signature(reader).parameters) - {"path", "group_column"})
        print(f"error: --reader-arg {bad[0]}: not an argument of reader {args.reader!r}; allowed: "
              f"{', '.join(allowed)}", file=sys.stderr)
        return 2
    try:
        raw = reader(args.path, group_column=args.group_column, **extra)
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
