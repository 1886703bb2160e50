"""`python -m pipeline.cli.npu_check`: the first-host check of the NPU path with luigi.cfg's `[npu]` settings.

The checks themselves live in din_model.run.npu_check (they need TensorFlow and the adapter, not Luigi);
this command reads the settings exactly as training does and prints one verdict line per check.
Exit status: 0 all checks passed, 1 a check said FAIL, 2 the `[npu]` settings are invalid.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from din_common.errors import InputError


def main(argv=None) -> int:
    from din_model.run import npu_check

    parser = argparse.ArgumentParser(prog="python -m pipeline.cli.npu_check",
                                     description=npu_check.__doc__.split("\n")[0])
    parser.add_argument("--rank-table", default=None, help="HCCL rank table for the 2-rank all-reduce "
                                                           "(default: [npu] rank_table_file)")
    parser.add_argument("--dump-dir", default=None, help="where the graph engine dumps its graphs (default: a new "
                                                         "temporary directory, kept)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the all-reduce ranks")
    args = parser.parse_args(argv)
    from pipeline.tasks.stage2 import current_npu_options  # luigi.cfg [npu], as training reads it

    try:
        options = current_npu_options()
    except InputError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    dump_dir = Path(args.dump_dir or tempfile.mkdtemp(prefix="din-npu-check-"))
    dump_dir.mkdir(parents=True, exist_ok=True)
    rank_table = options.rank_table_file if args.rank_table is None else args.rank_table
    verdicts = npu_check.run_checks(options, dump_dir=dump_dir, rank_table=rank_table, timeout=args.timeout)
    return 1 if verdicts.failed else 0


if __name__ == "__main__":
    sys.exit(main())
