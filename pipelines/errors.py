"""User errors: the CLI prints their message as one line on stderr and exits 2."""


class UserError(Exception):
    """Something the user can fix: a config key, a path, a URI, a resource request."""
