"""schema.sql is the schema the migrations make, regenerated with each of them."""
from devtools.schema_file import COMMAND, SCHEMA_FILE, dump_schema, readable


def test_schema_sql_is_what_the_migrations_make(database):
    # `database` is a clone of the template a new migrate.py run made.
    assert SCHEMA_FILE.read_text() == dump_schema(database.owner_url), (
        f"schema.sql is not the schema of a newly migrated database: run `{COMMAND}` and commit it")


def test_function_bodies_are_kept_as_written():
    dump = "\n".join([
        "--", "-- Name: f(); Type: FUNCTION; Schema: public; Owner: -", "--", "",
        "CREATE FUNCTION public.f() RETURNS void", "    LANGUAGE plpgsql", "    AS $$",
        "-- a comment of the function's own", "SET LOCAL x = 1;", "", "",
        "PERFORM public.g();", "$$;", "", "",
        "SET default_tablespace = '';", "\\restrict abc",
    ])
    text = readable(dump)
    assert text.endswith("\n".join([
        "-- " + "-" * 64 + " functions", "",
        "CREATE FUNCTION f() RETURNS void", "    LANGUAGE plpgsql", "    AS $$",
        "-- a comment of the function's own", "SET LOCAL x = 1;", "", "",
        "PERFORM public.g();", "$$;", ""]))
