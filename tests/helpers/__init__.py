"""Shared test helpers: fixtures, stand-ins and capture tools that tests of every package use."""
