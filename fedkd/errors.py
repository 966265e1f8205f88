"""Errors that mean "the user's input is wrong": the CLI prints them as one line, exit 2."""


class FedkdInputError(ValueError):
    """A configuration, dataset or command-line value the user must fix."""


class ConfigError(FedkdInputError):
    """Invalid configuration: names the key, the value and what is allowed."""


class DataError(FedkdInputError):
    """A dataset file that is missing or malformed."""


class RunFailed(RuntimeError):
    """The run cannot go on (e.g. no client answered); the CLI prints it as one line."""
