"""schema.sql: the schema every migration together makes, as one file to read.

    make schema                       # or: .venv/bin/python -m devtools.schema_file

migrates a new database on a throwaway PostgreSQL and writes what pg_dump
prints of it (--schema-only --no-owner), without pg_dump's settings and
comments and without the `public.` before every name, under a heading per kind
of object, in pg_dump's order: the same migrations always give the same file.
tests/operations/test_schema_file.py holds schema.sql to it, so a migration
added without running this fails the suite."""
import re
import shutil
import subprocess
import tempfile

import migrate
from devtools.cluster import bin_dir, testing_postgresql_options

SCHEMA_FILE = migrate.ROOT / "schema.sql"
COMMAND = "make schema"

HEADER = f"""\
-- Q Marketplace: the current schema, as a new database has it after every
-- migration in database/migrations/. Generated, do not edit: run `{COMMAND}`
-- after adding a migration (the tests fail until schema.sql matches them).
--
-- For reading. migrate.py builds and upgrades every database from the
-- migrations, never from this file. No owner is named: the owner is whoever runs
-- migrate.py, and owns every object. Roles belong to the whole server, so
-- migrate.py creates them, not this file; what each may do is in the grants below:
--   app_user         the service's login: data access only, no DDL; money moves only
--                    through the SECURITY DEFINER functions
--   analytics_user   reads the three views, nothing else
"""

# pg_dump's object types, by the heading they are printed under.
SECTIONS = {
    "FUNCTION": "functions",
    "TABLE": "tables and views",
    "VIEW": "tables and views",
    "SEQUENCE": "tables and views",
    "DEFAULT": "tables and views",
    "CONSTRAINT": "primary keys and unique constraints",
    "INDEX": "indexes",
    "TRIGGER": "triggers",
    "FK CONSTRAINT": "foreign keys",
    "ACL": "grants",
}
# pg_dump's comment before each object: "-- Name: users; Type: TABLE; Schema: public; Owner: -".
OBJECT_COMMENT = re.compile(r"^-- Name: .*?; Type: (.*?); Schema: ")
# pg_dump's session settings, its \restrict token (new on each run) and its other comments.
NOISE = ("--", "SET ", "SELECT pg_catalog.set_config(", "\\")
# $$ or $tag$: a function body, printed as written, which nothing here changes.
DOLLAR_QUOTE = re.compile(r"\$(?:[A-Za-z_]\w*)?\$")


def pg_dump(owner_url):
    return subprocess.run([str(bin_dir() / "pg_dump"), "--schema-only", "--no-owner", owner_url],
                          capture_output=True, text=True, check=True).stdout


def readable(dump):
    """pg_dump's schema-only text as schema.sql has it."""
    lines, section, quote = [], None, None
    for line in dump.splitlines():
        if quote is None:
            found = OBJECT_COMMENT.match(line)
            if found and SECTIONS.get(found[1], found[1].lower()) != section:
                section = SECTIONS.get(found[1], found[1].lower())
                while lines and not lines[-1]:
                    lines.pop()
                lines += ["", f"-- {'-' * 64} {section}", ""]
            if line.startswith(NOISE) or (not line and (not lines or not lines[-1])):
                continue
            opening = DOLLAR_QUOTE.search(line)
            head, rest = (line[:opening.start()], line[opening.start():]) if opening else (line, "")
            line = re.sub(r"\bpublic\.", "", head) + rest
        for tag in DOLLAR_QUOTE.findall(line):
            quote = tag if quote is None else None if tag == quote else quote
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return HEADER + "\n".join(lines) + "\n"


def dump_schema(owner_url):
    """The schema of the database at `owner_url`, as schema.sql has it."""
    return readable(pg_dump(owner_url))


def generate():
    """schema.sql's text: the schema of a new database that migrate.py has
    taken through every migration, on a PostgreSQL of its own."""
    import testing.postgresql
    from psycopg2.extensions import make_dsn

    base_dir = tempfile.mkdtemp(prefix="qmarket-schema-pg-", dir="/tmp")
    try:
        server = testing.postgresql.Postgresql(**testing_postgresql_options(base_dir))
        try:
            owner_url = make_dsn(server.url(), dbname="qmarket_schema")
            migrate.migrate(owner_url, None, out=lambda line: None)
            return dump_schema(owner_url)
        finally:
            server.stop()
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


def main():
    text = generate()
    changed = not SCHEMA_FILE.exists() or SCHEMA_FILE.read_text() != text
    SCHEMA_FILE.write_text(text)
    print(f"{SCHEMA_FILE.name}: {'written' if changed else 'unchanged'} "
          f"(schema version {len(migrate.releases())}, {text.count(chr(10))} lines)")


if __name__ == "__main__":
    main()
