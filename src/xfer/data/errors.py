"""Errors a user can fix; the entry point prints them as one line."""


class DataError(ValueError):
    """Data are missing, unreadable or inconsistent."""
