"""User-facing errors: the CLI prints them as `Error: ...` and exits non-zero."""


class SelfInstructError(Exception):
    """Base class for errors that are the user's to fix (bad input, not a bug)."""


class ConfigError(SelfInstructError):
    """A config file or override is invalid; the message lists every problem."""


class DataError(SelfInstructError):
    """A seed or task file is malformed; the message names file and line."""


class RunDirError(SelfInstructError):
    """A run directory is missing, damaged, or belongs to a different config."""


class ModelError(SelfInstructError):
    """The model could not be found or loaded."""


class Stopped(Exception):
    """The user asked the job to stop (Ctrl-C, SIGTERM); it stopped at a safe point. Not an error."""
