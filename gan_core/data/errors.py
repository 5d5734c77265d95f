"""The one error type a data source raises for bad input; its message names the file or value."""


class DataError(ValueError):
    """Bad dataset input: missing path, corrupt file, inconsistent labels or sizes."""
