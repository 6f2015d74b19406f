"""User-facing errors: printed as one line by the entry point, which then exits with code 2."""


class KaelabError(Exception):
    """A problem with the user's input (config, data, checkpoint), not a bug."""


class ConfigError(KaelabError, ValueError):
    """A config value that is well-typed but not valid (e.g. a layer index out of range)."""


class DataNotFoundError(KaelabError, RuntimeError):
    """Data files missing and not obtainable (e.g. MNIST offline without the raw files)."""
