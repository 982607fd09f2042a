"""A throwaway PostgreSQL for the run (TEST_DATABASE_URL, else testing.postgresql),
the schema built once into a template by migrate.py's own code, and one clone of
it that every test starts from empty: its rows deleted after each test, and the
whole clone replaced when a test changed more than rows."""
import copy
import dis
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from contextlib import closing, contextmanager

import psycopg2
import pytest
import testing.postgresql
from psycopg2 import sql
from psycopg2.extensions import make_dsn

import migrate
from app import close_app, create_app
from app.breakers import Breakers
from app.config import load_config
from app.health import Health
from app.extensions import db, limiter
from app.observability import configure_logging
from app.providers import Providers
from devtools.cluster import testing_postgresql_options
from tests.stubs import AnthropicStub, OpenAIStub
from tests.support import ROOT, LiveServer, settings_for, stop_servers_on, user

# Tests never read a developer's .env.
os.environ["ENV_FILE"] = os.devnull
APP_PASSWORD = "app-user-test-password"
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _admin(server_url):
    conn = psycopg2.connect(make_dsn(server_url, dbname="postgres"))
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_server():
    """The owner's URL of a server the tests may create databases on."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    base_dir = tempfile.mkdtemp(prefix="qmarket-test-pg-", dir="/tmp")
    server = testing.postgresql.Postgresql(**testing_postgresql_options(base_dir))
    try:
        yield server.url()
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server):
    name = f"qmarket_template_{uuid.uuid4().hex[:8]}"
    with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # Roles belong to the whole server, which runs sharing TEST_DATABASE_URL
        # also share: one migration at a time creates them.
        cur.execute("SELECT pg_advisory_lock(hashtext('qmarket test template'))")
        try:
            migrate.migrate(make_dsn(pg_server, dbname=name), APP_PASSWORD, out=lambda line: None)
        finally:
            cur.execute("SELECT pg_advisory_unlock(hashtext('qmarket test template'))")
    yield name
    with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class TestDatabase:
    def __init__(self, server_url, name):
        self.name = name
        self.owner_url = make_dsn(server_url, dbname=name)
        self.app_url = make_dsn(server_url, dbname=name, user=migrate.APP_ROLE, password=APP_PASSWORD)

    def owner(self):
        """A connection as the owner, for arranging and inspecting rows."""
        conn = psycopg2.connect(self.owner_url)
        conn.autocommit = True
        return conn

    def query(self, statement, params=None):
        with closing(self.owner()) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else cur.rowcount


@contextmanager
def clean_database(pg_server, template_db):
    """A fresh clone of the migrated template, dropped afterwards."""
    name = _clone(pg_server, template_db)
    try:
        yield TestDatabase(pg_server, name)
    finally:
        _drop(pg_server, name)


def _clone(pg_server, template_db):
    name = f"qmarket_test_{uuid.uuid4().hex[:12]}"
    with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    return name


def _drop(pg_server, name):
    with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


USER_SCHEMAS = "SELECT oid FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'"

# Everything but the rows of the data tables: the schema, its owners and grants, and
# the rows migrate.py writes (catalog, deposit cap, versions). Equal to the template's
# once the data tables are emptied unless a test changed one of them.
STATE = f"""
    SELECT md5(string_agg(line, E'\n' ORDER BY line)) FROM (
        SELECT format('n %s %s %s', nspname, nspowner::regrole, nspacl)
          FROM pg_namespace WHERE oid IN ({USER_SCHEMAS})
        UNION ALL
        SELECT format('c %s %s %s %s %s %s', c.oid::regclass, c.relkind, c.relowner::regrole, c.relacl,
                      c.relrowsecurity, c.reloptions)
          FROM pg_class c WHERE c.relnamespace IN ({USER_SCHEMAS})
        UNION ALL
        SELECT format('a %s %s %s %s %s %s', a.attrelid::regclass, a.attname,
                      format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attacl)
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace IN ({USER_SCHEMAS}) AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT format('p %s %s %s %s %s %s', p.oid::regprocedure, p.proowner::regrole, p.proacl, p.prosecdef,
                      p.proconfig, md5(p.prosrc))
          FROM pg_proc p WHERE p.pronamespace IN ({USER_SCHEMAS})
        UNION ALL
        SELECT format('k %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
          FROM pg_constraint WHERE connamespace IN ({USER_SCHEMAS})
        UNION ALL
        SELECT format('i %s', pg_get_indexdef(i.indexrelid))
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace IN ({USER_SCHEMAS})
        UNION ALL
        SELECT format('t %s %s %s', tgrelid::regclass, tgenabled, pg_get_triggerdef(oid))
          FROM pg_trigger WHERE NOT tgisinternal
        UNION ALL
        SELECT format('v %s %s', c.oid::regclass, md5(pg_get_viewdef(c.oid)))
          FROM pg_class c WHERE c.relkind IN ('v', 'm') AND c.relnamespace IN ({USER_SCHEMAS})
        UNION ALL
        SELECT format('s %s %s', c.oid::regclass, pg_sequence_last_value(c.oid))
          FROM pg_class c WHERE c.relkind = 'S' AND c.relnamespace IN ({USER_SCHEMAS})
        UNION ALL
        SELECT format('r %s %s %s %s', polrelid::regclass, polname, polroles, pg_get_expr(polqual, polrelid))
          FROM pg_policy
        UNION ALL
        SELECT format('d %s %s', defaclrole::regrole, defaclacl) FROM pg_default_acl
        UNION ALL
        SELECT format('e %s %s', extname, extversion) FROM pg_extension
        UNION ALL
        SELECT format('o %s', count(*)) FROM pg_largeobject_metadata
        UNION ALL
        SELECT format('b %s %s', datacl, datconnlimit) FROM pg_database WHERE datname = current_database()
        UNION ALL
        SELECT format('g %s %s', setrole, setconfig) FROM pg_db_role_setting
         WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
        {{kept_rows}}
    ) state(line)
"""


class SharedDatabase(TestDatabase):
    """One clone that the tests share, one at a time. The tables the template holds
    no rows in are the data tables: emptying them costs far less than a clone per
    test. A test that changed anything else (the catalog, the deposit cap, the
    schema, grants) leaves a fingerprint that differs from the template's, and the
    next test gets a new clone instead."""

    def __init__(self, server_url, template_db):
        self.server_url, self.template_db = server_url, template_db
        super().__init__(server_url, _clone(server_url, template_db))
        with closing(self.owner()) as conn, conn.cursor() as cur:
            cur.execute("""SELECT c.oid::regclass::text FROM pg_class c
                            WHERE c.relkind IN ('r', 'p') AND c.relnamespace IN (""" + USER_SCHEMAS + ") ORDER BY 1")
            tables = [table for (table,) in cur.fetchall()]
            kept = []
            for table in tables:
                cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.SQL(table)))
                kept.append(cur.fetchone()[0])
        self.data_tables = [table for table, has_rows in zip(tables, kept) if not has_rows]
        kept_rows = "".join(
            f"\n        UNION ALL SELECT format('row {table} %s', t) FROM {table} t"
            for table, has_rows in zip(tables, kept) if has_rows)
        self.state_query = STATE.replace("{kept_rows}", kept_rows)
        # DELETE is a hundred times faster than TRUNCATE on tables this small. With
        # session_replication_role = replica no trigger fires: neither the ledger's
        # guards nor the foreign keys, so the order does not matter.
        self.empty = sql.SQL(" ").join(
            [sql.SQL("SET LOCAL session_replication_role = replica;")]
            + [sql.SQL("DELETE FROM {};").format(sql.SQL(table)) for table in self.data_tables]
            + [sql.SQL("""SELECT setval(s.seqrelid, s.seqstart, false) FROM pg_sequence s
                           JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                          WHERE d.refobjid = ANY({}::regclass[]) AND d.deptype IN ('a', 'i')""").format(
                sql.Literal(self.data_tables))])
        self.template_state = self._state()
        # The connection reset works through, kept from one test to the next: on a new
        # connection the fingerprint takes twice as long (the backend's catalog caches
        # start cold), and the connection itself costs as much again.
        self._kept = None

    def _state(self):
        return self.query(self.state_query)[0][0]

    def _empty_and_compare(self, conn):
        with conn.cursor() as cur:
            # A connection a test left open could hold locks the DELETEs would wait for.
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()")
            conn.autocommit = False
            cur.execute("SET LOCAL lock_timeout = '10s'")
            cur.execute(self.empty)
            conn.commit()
            conn.autocommit = True
            cur.execute(self.state_query)
            return cur.fetchone()[0] == self.template_state

    def reset(self):
        """Empties the data tables, or replaces the clone when more than rows changed."""
        stop_servers_on(self.name)
        # The kept connection may have ended with the test (a test that ends every
        # backend, a server restart): then once more on a new one.
        kept, self._kept = self._kept, None
        for conn in ([kept] if kept is not None and not kept.closed else []) + [None]:
            try:
                conn = conn or self.owner()
                same = self._empty_and_compare(conn)
            except psycopg2.Error:
                same = None
            if same:
                self._kept = conn
                return
            if conn is not None:
                conn.close()
            if same is False or conn is not kept:
                break
        _drop(self.server_url, self.name)
        self.__init__(self.server_url, self.template_db)

    def _close_kept(self):
        kept, self._kept = self._kept, None
        if kept is not None and not kept.closed:
            kept.close()

    def drop(self):
        self._close_kept()
        _drop(self.server_url, self.name)


@pytest.fixture(scope="session")
def shared_database(pg_server, template_db):
    shared = SharedDatabase(pg_server, template_db)
    yield shared
    shared.drop()


@pytest.fixture
def database(shared_database):
    yield shared_database
    shared_database.reset()


@pytest.fixture(scope="session")
def openai_stub():
    stub = OpenAIStub()
    yield stub
    stub.stop()


@pytest.fixture(scope="session")
def anthropic_stub():
    stub = AnthropicStub()
    yield stub
    stub.stop()


@pytest.fixture
def stubs(openai_stub, anthropic_stub):
    """(the OpenAI stub, the Anthropic stub), reset for the test."""
    openai_stub.reset()
    anthropic_stub.reset()
    return openai_stub, anthropic_stub


@pytest.fixture
def stubbed_settings(database, openai_stub, anthropic_stub):
    """Settings whose OpenAI and Anthropic providers are the stubs, reset for the test."""
    openai_stub.reset()
    anthropic_stub.reset()
    return settings_for(database.app_url, OPENAI_BASE_URL=f"{openai_stub.url}/v1",
                        ANTHROPIC_BASE_URL=f"{anthropic_stub.url}/v1", PROVIDER_TIMEOUT=1)


@pytest.fixture
def settings(database):
    return settings_for(database.app_url)


# Apps create_app made for earlier tests, by the settings they were made with: making one
# costs more than most tests. A test's app is closed after it, as before, and kept for a
# later test with equal settings only while its routes, hooks, config and extensions are
# those it was made with (a test may add a route or change the config); the next test
# gets what a new app would have of its own: a new pool and transport, no request seen
# yet, and the process-wide logging and rate-limit state that create_app sets up.
_apps = {}


def _shape(app):
    def filled(value):  # Flask's registries are defaultdicts, which a lookup fills with empty entries
        if isinstance(value, dict):
            return {key: item for key, item in ((key, filled(item)) for key, item in value.items()) if item}
        return list(value) if isinstance(value, list) else value
    hooks = (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs,
             app.teardown_appcontext_funcs, app.url_value_preprocessors, app.url_default_functions,
             app.template_context_processors, app.error_handler_spec)
    return (copy.deepcopy(dict(app.config)), [(rule.rule, rule.endpoint, rule.methods) for rule in app.url_map.iter_rules()],
            dict(app.view_functions), [filled(hook) for hook in hooks], app.wsgi_app, dict(app.blueprints),
            sorted(app.extensions), app.json, dict(vars(app.json)), app.session_interface, app.test_client_class,
            app.response_class, app.request_class)


def _reopen(app):
    configure_logging(app.config["LOG_LEVEL"])
    db.init_app(app)
    limiter.init_app(app)
    app.extensions["providers"] = Providers(app.config)
    app.extensions["breakers"] = Breakers(app.config)
    app.extensions["health"] = Health(app.config)
    app._got_first_request = False


@pytest.fixture
def app(settings):
    key = repr(sorted(load_config(settings).items()))
    app = _apps.pop(key, None)
    if app is None:
        app = create_app(settings)
    else:
        _reopen(app)
    shape = _shape(app)
    yield app
    close_app(app)
    if _shape(app) == shape:
        _apps[key] = app
        while len(_apps) > 8:
            del _apps[next(iter(_apps))]


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def token(client):
    """The access token of a registered user, ada@example.com."""
    return user(client)


@pytest.fixture
def live_server(settings):
    server = LiveServer(settings)
    yield server
    server.stop()


def pytest_make_parametrize_id(config, val, argname):
    """A freshly drawn UUID gets a name that is the same in every run."""
    if isinstance(val, str) and UUID_TEXT.fullmatch(val):
        return f"{argname}-uuid"
    return None


def pytest_terminal_summary(terminalreporter):
    """Prints where a test said it wrote files to look at (`record_property("written_to", path)`),
    also from xdist workers, whose own output is not shown."""
    folders = {value for reports in terminalreporter.stats.values() for report in reports
               for name, value in getattr(report, "user_properties", ()) if name == "written_to"}
    for folder in sorted(folders):
        terminalreporter.write_line(f"written to {folder}")


# The `server` marker, found rather than written: a test is marked when it, a fixture
# it uses, or a helper of the project's that either calls starts a process of its own.
# Such a process is anything made with subprocess (gunicorn under LiveServer and
# live_service, `make run`'s launcher, git, pg_dump), a testing.postgresql server
# (PrivateServer) or Playwright's browser. The session's own PostgreSQL (pg_server)
# does not count. `make test-fast` runs the rest: `-m "not server"`.
STARTERS = ("subprocess", "testing.postgresql", "playwright")
SHARED_BY_ALL = {"pg_server"}
_starts = {}


def _is_starter(name):
    return any(name == starter or name.startswith(starter + ".") for starter in STARTERS)


def _ours(obj):
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    path = getattr(module, "__file__", None) or ""
    return path.startswith(str(ROOT)) and "/.venv/" not in path


def _obj_starts(obj):
    if isinstance(obj, str) or inspect.ismodule(obj):
        return _is_starter(obj if isinstance(obj, str) else obj.__name__)
    if _is_starter(getattr(obj, "__module__", None) or ""):
        return True
    if not _ours(obj):
        return False
    if inspect.isclass(obj):
        return any(_code_starts(member.__code__, member.__globals__)
                   for klass in obj.__mro__ if _ours(klass)
                   for name in ("__new__", "__init__", "__enter__")
                   if inspect.isfunction(member := vars(klass).get(name)))
    function = inspect.unwrap(obj)
    return inspect.isfunction(function) and _code_starts(function.__code__, function.__globals__)


def _code_starts(code, namespace):
    """Whether `code`, or what it calls by a global name (`name`, `name.attr...`), starts a process."""
    if code not in _starts:
        _starts[code] = False  # while being looked at: recursion starts nothing by itself
        _starts[code] = any(_code_starts(const, namespace) for const in code.co_consts if inspect.iscode(const)) \
            or any(_obj_starts(obj) for obj in _used(code, namespace))
    return _starts[code]


def _used(code, namespace):
    """What `code` uses by name: each global followed through its attributes
    (`subprocess.Popen`, `LiveServer.running`) while it is a module or a class, and the
    names of the modules it imports."""
    found = None
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_ATTR", "LOAD_METHOD") and (inspect.ismodule(found) or inspect.isclass(found)) \
                and hasattr(found, instruction.argval):
            found = getattr(found, instruction.argval)
            continue
        if found is not None:
            yield found
            found = None
        if instruction.opname == "LOAD_GLOBAL" and instruction.argval in namespace:
            found = namespace[instruction.argval]
        elif instruction.opname == "IMPORT_NAME":
            yield instruction.argval
    if found is not None:
        yield found


def _starts_a_process(item):
    functions = [getattr(item, "obj", None)] + [
        definition.func for name, definitions in item._fixtureinfo.name2fixturedefs.items()
        if name not in SHARED_BY_ALL for definition in definitions]
    return any(function is not None and _obj_starts(getattr(function, "__func__", function))
               for function in functions)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Marks `server` the tests that start a process (above), before `-m` selects, and
    runs them first: they are the long ones (seconds each, the rest milliseconds), so
    with pytest-xdist handing out a test at a time (pytest.ini's --maxschedchunk) the
    workers end together on short tests rather than one waiting for the other's last
    launcher or live-server test."""
    for item in items:
        if _starts_a_process(item):
            item.add_marker(pytest.mark.server)
    items.sort(key=lambda item: item.get_closest_marker("server") is None)


_unmarked = None  # the test running now when it is not marked `server`
_popen_init = subprocess.Popen.__init__


def _guarded_popen_init(self, args, *rest, **options):
    """The marker's check, in every run: a test left unmarked that starts a process
    fails, naming it, rather than slowing down or breaking `make test-fast`."""
    if _unmarked is not None and not any(frame.f_code.co_name in SHARED_BY_ALL
                                         and frame.f_code.co_filename == __file__
                                         for frame in _frames()):
        raise AssertionError(f"{_unmarked} started {args!r} but is not marked `server`: tests/conftest.py's "
                             "rule did not see it; mark the module `pytestmark = pytest.mark.server`")
    _popen_init(self, args, *rest, **options)


def _frames():
    frame = sys._getframe(2)
    while frame is not None:
        yield frame
        frame = frame.f_back


subprocess.Popen.__init__ = _guarded_popen_init


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item):
    global _unmarked
    _unmarked = None if item.get_closest_marker("server") else item.nodeid
    try:
        return (yield)
    finally:
        _unmarked = None
