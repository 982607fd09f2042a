"""The embedded cluster's settings (devtools.embedded): the URLs `make run`
writes into .env for everything else to read, and the service (app/,
database/) importing neither devtools nor migrate.py."""
import ast
from urllib.parse import urlsplit

import pytest
from psycopg2.extensions import parse_dsn

from app.config import PROJECT_ROOT, SETTINGS, load_config
from devtools.embedded import embedded_database_urls, write_embedded_urls

OLD_ENV = "# made by an older `make run`\nINSTANCE_ID=abc\nEMBEDDED_DB_PORT=54321\n" \
          "EMBEDDED_DB_PASSWORD=a/b c\nEMBEDDED_DB_OWNER_PASSWORD=o@p\nLOG_LEVEL=DEBUG\n"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in [*SETTINGS, "INSTANCE_ID", "EMBEDDED_DB_PORT", "EMBEDDED_DB_PASSWORD", "EMBEDDED_DB_OWNER_PASSWORD"]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def env_file(tmp_path, monkeypatch):
    path = tmp_path / ".env"
    path.write_text(OLD_ENV)
    monkeypatch.setenv("ENV_FILE", str(path))
    return path


def test_the_embedded_urls_quote_the_passwords():
    urls = embedded_database_urls({"EMBEDDED_DB_PORT": 54321, "EMBEDDED_DB_PASSWORD": "a/b c",
                                   "EMBEDDED_DB_OWNER_PASSWORD": "o@p"})
    assert urls["DATABASE_URL"] == "postgresql://app_user:a%2Fb%20c@127.0.0.1:54321/qmarket"
    assert urls["MIGRATE_DATABASE_URL"] == "postgresql://qmarket_owner:o%40p@127.0.0.1:54321/qmarket"
    assert parse_dsn(urls["DATABASE_URL"])["password"] == "a/b c"
    assert urlsplit(urls["MIGRATE_DATABASE_URL"]).port == 54321


def test_an_older_env_file_gains_the_urls_that_every_command_then_reads(env_file):
    settings, written = write_embedded_urls(env_file)
    assert (settings["EMBEDDED_DB_PORT"], settings["INSTANCE_ID"]) == (54321, "abc")
    assert written == ["DATABASE_URL", "MIGRATE_DATABASE_URL"]
    assert env_file.read_text().startswith(OLD_ENV), "every line already there is kept"
    config = load_config(check_secrets=False)
    assert config["DATABASE_URL"] == embedded_database_urls(settings)["DATABASE_URL"]
    assert config["MIGRATE_DATABASE_URL"] == embedded_database_urls(settings)["MIGRATE_DATABASE_URL"]
    assert config["LOG_LEVEL"] == "DEBUG"
    assert write_embedded_urls(env_file) == (settings, []), "up to date: nothing written again"


def test_a_changed_port_moves_the_urls_with_it(env_file):
    write_embedded_urls(env_file)
    env_file.write_text(env_file.read_text().replace("EMBEDDED_DB_PORT=54321", "EMBEDDED_DB_PORT=54322"))
    settings, written = write_embedded_urls(env_file)
    assert settings["EMBEDDED_DB_PORT"] == 54322 and written == ["DATABASE_URL", "MIGRATE_DATABASE_URL"]
    assert urlsplit(load_config(check_secrets=False)["DATABASE_URL"]).port == 54322
    assert env_file.read_text().count("DATABASE_URL=") == 2, "replaced in place, not appended again"


@pytest.mark.parametrize("in_file, in_environment", [
    ("DATABASE_URL=postgresql://app_user:pw@db.internal:5432/qmarket\n", {}),
    ("DB_HOST=db.internal\n", {}),
    ("", {"DATABASE_URL": "postgresql://app_user:pw@db.internal:5432/qmarket"}),
    ("", {"DB_HOST": "db.internal"}),
])
def test_a_server_of_the_operators_own_is_left_alone(env_file, monkeypatch, in_file, in_environment):
    env_file.write_text(OLD_ENV + in_file)
    for name, value in in_environment.items():
        monkeypatch.setenv(name, value)
    assert write_embedded_urls(env_file) == ({}, [])
    assert env_file.read_text() == OLD_ENV + in_file


def test_an_env_file_without_a_cluster_names_none(env_file):
    env_file.write_text("LOG_LEVEL=DEBUG\n")
    assert write_embedded_urls(env_file) == ({}, [])


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_the_service_imports_neither_devtools_nor_migrate():
    found = [f"{path.relative_to(PROJECT_ROOT)}: {module}"
             for package in ("app", "database") for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
             for module in imported_modules(path)
             if module.split(".")[0] in ("devtools", "migrate")]
    assert found == []
