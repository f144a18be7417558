"""User-facing errors. The CLI prints any of these as one line and exits non-zero."""


class ContrastlabError(Exception):
    """Base of every error that a user can fix (bad input, missing file, wrong config)."""


class ConfigError(ContrastlabError, ValueError):
    """Unknown preset or key, wrong type, malformed YAML."""


class DatasetError(ContrastlabError):
    """Unknown, missing, corrupt or truncated dataset; a task class absent from the data."""


class CheckpointError(ContrastlabError):
    """Missing or incomplete checkpoint, or one from another architecture."""


class RunDirectoryError(ContrastlabError):
    """A run directory that holds results of another configuration, or is held by another run."""


class StorageError(ContrastlabError, OSError):
    """A file could not be written or read: permission, read-only file system, disk full."""


class CorruptFileError(ContrastlabError, ValueError):
    """A stored file (JSON sidecar, manifest, array, checkpoint) that cannot be parsed or holds
    non-finite values."""


class NonFiniteError(ContrastlabError, FloatingPointError):
    """Training produced a non-finite loss (NaN or inf); the unit is not marked finished."""


class Interrupted(BaseException):
    """Ctrl-C in the command line (raised by its SIGINT handler instead of KeyboardInterrupt, which
    typer would swallow): finished units are kept."""


class Terminated(Interrupted):
    """SIGTERM (``kill``, Slurm's preemption or time limit): handled as Ctrl-C, exit status 143."""
