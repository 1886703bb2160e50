"""README's troubleshooting table quotes messages the code really prints.

The rule, for each row of the `| the message says | what to do |` table: each fragment in backticks in
its first cell is a message a user sees (a first cell without backticks is advice, not a message, and
has nothing to check). A fragment's words split into runs at what a message fills in or the README
leaves out: `...`, numbers, paths, quoted values, flags, `[section]` names, identifiers with capitals
(`reviewerID`, `AllTask`) and one-letter placeholders (`N`, `E`). A run of one or two words proves nothing
(`gpu, but`: a value and a word; `the limit`: Python's own words in a message) and is passed over. Each
longer run must be made of pieces of two
or more words that stand, in that order, in one string literal or f-string of pipeline/, din_model/ or
din_common/ (docstrings excluded; an f-string's fields split it as well), with at most one other word
between two pieces and at either end: a lowercase value a field fills in (`maxlen`, `gpu`), or a word of
a message the code composes from several literals. Words are compared without the punctuation around
them. So an edited message, or a row quoting one the code no longer prints, fails here; a value the
README makes up as an example does not. Read with `ast`: nothing is imported.
"""
import ast
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("din_common", "din_model", "pipeline")
TABLE_HEADER = "| the message says | what to do |"
PUNCTUATION = ".,;:()!?'\""
PLAIN_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")  # `expected`, `non-blank`: not a value a message fills in


def plain_runs(text: str) -> list:
    """The runs of plain words of `text` (lists of words), split at every other token."""
    runs, current = [], []
    for token in text.split():
        word = token.strip(PUNCTUATION)
        if PLAIN_WORD.fullmatch(word) and not token.startswith(("-", "[", "`")):
            current.append(word)
        else:
            runs.append(current)
            current = []
    runs.append(current)
    return [run for run in runs if run]


def literal_segments(tree: ast.AST) -> list:
    """The texts of a module's string literals, an f-string split at its fields; docstrings left out."""
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    segments = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            segments += [part.value for part in node.values if isinstance(part, ast.Constant)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            segments.append(node.value)
    return segments


def source_runs() -> list:
    """Every run of plain words of the packages' string literals, as space-joined text."""
    runs = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for segment in literal_segments(ast.parse(path.read_text(), str(path))):
                runs += [" ".join(run) for run in plain_runs(segment)]
    return runs


def readme_fragments() -> list:
    """(row's first cell, fragment) for each backticked fragment of the troubleshooting table's first column."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index(TABLE_HEADER) + 2  # past the header and its | --- | line
    fragments = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        message_cell = line.strip().strip("|").rsplit("|", 1)[0].strip()
        fragments += [(message_cell, fragment) for fragment in re.findall(r"`([^`]+)`", message_cell)]
    return fragments


SOURCE_RUNS = source_runs()


def test_the_table_is_found_and_quotes_messages():
    assert len(readme_fragments()) > 20


def in_the_code(words: list) -> bool:
    """Whether these words stand, in this order and whole, in one run of the code's literals."""
    text = " ".join(words)
    return any(re.search(rf"(?:^| ){re.escape(text)}(?: |$)", source) for source in SOURCE_RUNS)


def made_of_code_pieces(run: list) -> bool:
    """Whether `run` is pieces of two or more words from the code, with one other word at most between two."""
    @functools.lru_cache(maxsize=None)
    def covered_from(start: int, after_gap: bool) -> bool:
        if start == len(run):
            return True
        if not after_gap and covered_from(start + 1, True):  # one word a field or another literal gives
            return True
        return any(in_the_code(run[start:end]) and covered_from(end, False) for end in range(start + 2, len(run) + 1))
    return covered_from(0, False)


@pytest.mark.parametrize("cell, fragment", readme_fragments(), ids=lambda value: value[:60])
def test_each_quoted_message_is_in_the_code(cell, fragment):
    for run in plain_runs(fragment):
        if len(run) < 3:
            continue
        assert made_of_code_pieces(run), f"README troubleshooting row {cell!r}: {' '.join(run)!r} is in no message"
