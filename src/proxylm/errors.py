"""The one base class for errors a user can act on: the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """Bad input (a file, a config key, a checkpoint, a corpus line); the message says what and where."""
