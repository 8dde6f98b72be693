"""MaskLab glue: structured configs, user-facing errors, the `masklab` CLI."""
from masklab.config import load_config
from masklab.config_schema import MaskLabConfig
from masklab.errors import CheckpointError, ConfigError, DataError, MaskLabError

__all__ = ["MaskLabConfig", "load_config", "MaskLabError", "ConfigError", "DataError", "CheckpointError"]
__version__ = "0.1.0"
