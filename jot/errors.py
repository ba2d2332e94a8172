"""Errors that describe a problem with the user's input, not with jot's code.

``launch.main`` prints a ``UserError`` as one line on stderr (no traceback) and exits with
status 2; any other exception is a bug and keeps its traceback. Both classes are
``ValueError`` subclasses, so callers that catch ``ValueError`` keep working.
"""


class UserError(ValueError):
    """A bad config value, input file, checkpoint or workdir; the message names it and the fix."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A ``UserError`` for a missing file or folder (also a ``FileNotFoundError``)."""
