"""Errors that mean "the user's input is wrong": the CLI prints one line and exits 2."""


class BenchInputError(Exception):
    """Bad input (unknown name, malformed file, missing dataset). Message names value + allowed."""
