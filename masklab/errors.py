"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class MaskLabError(Exception):
    """An error caused by the user's input (data, config, checkpoint), with a clear message."""


class ConfigError(MaskLabError):
    pass


class DataError(MaskLabError):
    pass


class CheckpointError(MaskLabError):
    pass
