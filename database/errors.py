"""Failures of the storage layer, independent of HTTP (the app maps them)."""
import psycopg2


class DatabaseUnavailable(Exception):
    """The database cannot be reached, or every pooled connection stayed busy."""

    def __init__(self, message="The database is unavailable; try again shortly."):
        super().__init__(message)
        self.message = message


def no_server_answered(error):
    """A driver error from no server at all (down, wrong address), not one the server sent."""
    return isinstance(error, psycopg2.OperationalError) and error.pgcode is None


def unreachable_database(error=None):
    """One line for an operator whose command found no database to talk to."""
    reason = f" ({first_line(error)})" if error is not None else ""
    return (f"the database could not be reached{reason}; the embedded one runs only while "
            "`make run` does: start it, then try again")


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
