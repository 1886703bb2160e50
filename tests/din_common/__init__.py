"""Tests of the `din_common` package (what both stages share)."""
