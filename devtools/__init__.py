"""Tools for running the service on a developer's machine and for the tests:
the embedded PostgreSQL cluster and the settings `make run` keeps for it, and
the generator of schema.sql (`make schema`). The service itself (app/,
database/) never imports this package."""
