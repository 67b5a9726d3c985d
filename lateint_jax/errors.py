"""Errors raised for bad input. The CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """An error caused by bad input: printed as one line, no traceback."""


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, malformed, or does not match the config."""


class IndexFormatError(UserError, ValueError):
    """An index on disk is missing, corrupted, truncated, or of another format version."""


class InputError(UserError, ValueError):
    """Texts, ids, or arguments that cannot be used."""


class DiskFullError(UserError, OSError):
    """The disk filled up while writing; what was there before is left as it was."""
