"""The one-line error types: each prints as its message alone, and only `InputError` means the user's input."""
import pytest

from din_common.errors import InputError, ReportedError, RunFailed


@pytest.mark.parametrize("kind", [InputError, RunFailed])
def test_each_reported_error_prints_as_its_message(kind):
    error = kind("missing data/raw/reviews.pkl: expected the review pickle")
    assert isinstance(error, ReportedError)
    assert str(error) == error.message == "missing data/raw/reviews.pkl: expected the review pickle"


def test_a_failed_run_is_not_an_input_error():
    assert not issubclass(RunFailed, InputError)
    assert not issubclass(InputError, RunFailed)
