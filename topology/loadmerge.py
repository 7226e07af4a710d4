"""`python -m topology load merge FILE.json...`: the shares of one load run (written by
`load --shard I/N`, on one machine or many) merged into that run's results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from topology.loadrun import print_saved, save_results
from topology.loadshard import MergeError, merged_doc, read_docs
from topology.players.report import table


def merge_files(
    paths: list[Path], out_dir: Path | None = None, run_id: str | None = None
) -> tuple[dict, tuple[Path, Path | None]]:
    """Merge the shard files `paths` into LABEL.json (+ .png) in `out_dir` (default: the
    first file's directory); the merged document and the paths written (the plot's None
    without matplotlib). MergeError when they are not all the shares of one run (of id
    `run_id`, if given), each once."""
    docs = read_docs(paths)
    try:
        doc = merged_doc(docs, [str(p) for p in paths], run_id)
    except (KeyError, TypeError) as exc:
        raise MergeError(f"malformed shard file: {exc!r}") from None
    out_dir = out_dir or paths[0].parent
    return doc, save_results(out_dir, doc["run"]["label"], doc)


def merge_main(argv: list[str]) -> int:
    """Command line of `load merge`."""
    p = argparse.ArgumentParser(
        prog="python -m topology load merge",
        description="Merge the shard files of one load run (load --shard I/N) into one "
        "summary, table, JSON and plot, as one process running it would have written.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE.json",
                   help="every shard's results, e.g. load-shard-*-of-4.json")  # fmt: skip
    p.add_argument("--out", type=Path, help="directory for LABEL.json and LABEL.png "
                                            "(default: the first file's directory)")  # fmt: skip
    p.add_argument("--run-id", metavar="ID",
                   help="refuse files of another run than load --run-id ID's")  # fmt: skip
    args = p.parse_args(argv)
    try:
        doc, saved = merge_files(args.files, args.out, args.run_id)
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{doc['shards']} shards merged:", table(doc["summary"]), sep="\n")
    print_saved(*saved)
    return 0
