"""The one error type for bad input: raised where input is checked, shown by the CLI as one line.

Anything else that escapes a command is a bug in halm and keeps its traceback. Every user-facing error
class (AudioError, SourceError, RunMismatch, DamagedFile, ...) derives from UserError; it is a
ValueError, so code that catches ValueError keeps working.
"""


class UserError(ValueError):
    """Input that halm cannot use: the message names the file, flag or setting and what to do."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (not a bug of halm, not a bad flag: the message names the step and the
    batch items and what to change). Shown by the CLI as one line, like a UserError."""
