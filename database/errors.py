"""Failures of the storage layer, independent of HTTP (the app maps them)."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached, or every pooled connection stayed busy."""

    def __init__(self, message="The database is unavailable; try again shortly."):
        super().__init__(message)
        self.message = message
