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
    """A run directory that holds results of another configuration."""


class NotBuiltError(ContrastlabError):
    """A subcommand or option that exists in the interface but is not implemented yet."""
