"""The lines tasks print while a `luigi --module pipeline ...` command runs.

- `task_line`: one line per task that ran, saying what it wrote and how long it took
  (`[RemapIds] 175,053 reviews ... -> data/remap (1.2 s)`).
- `progress_line`: a note from a long step while it runs.
- `count`, `split_counts`: the number formats those lines (and the summary) share.
The bottom layer of the command's output: it imports nothing from pipeline. The summary
block at the end of a run is pipeline.cli.summary; errors are pipeline.cli.errors.
"""
from __future__ import annotations

import sys

from din_common.feature_spec import SPLITS


def emit(line: str) -> None:
    """One line in one write: with `--workers N` task processes share the terminal, and
    print()'s separate writes of text and newline could interleave between them."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def task_line(task_name: str, what: str, seconds: float) -> None:
    emit(f"[{task_name}] {what} ({seconds:.1f} s)")


def progress_line(task_name: str, what: str) -> None:
    emit(f"[{task_name}] {what} ...")


def count(number: int, noun: str, plural: str = "") -> str:
    """`1 shard`, `8 shards`, `300 categories`"""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def split_counts(samples: dict[str, int]) -> str:
    """`train 1,586 / val 300 / test 300`"""
    return " / ".join(f"{split} {samples[split]:,}" for split in SPLITS if split in samples)
