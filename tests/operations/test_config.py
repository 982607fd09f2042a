"""Settings (SPEC §3): typed, checked, layered defaults < .env < environment <
overrides, and production refusing missing or weak secrets."""
import base64
import re

import pytest
from psycopg2.extensions import parse_dsn

from app import create_app
from app.config import PROJECT_ROOT, SETTINGS, ConfigError, load_config
from tests.support import settings_for

DATABASE_URL = "postgresql://app_user:pw@db.example:5432/qmarket"


def key_entry(kid, size=32):
    return f"{kid}:{base64.b64encode(b'k' * size).decode()}"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Only what a test sets: no setting leaks in from the shell running pytest."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def production():
    """Valid production settings; a test removes or spoils one of them."""
    return settings_for(DATABASE_URL)


def test_valid_production_settings_load(production):
    config = load_config(production)
    assert config["APP_ENV"] == "production"
    assert config["ENCRYPTION_KEYS"] == [("test1", b"k" * 32)]
    assert config["PASSWORD_ITERATIONS"] == production["PASSWORD_ITERATIONS"]


@pytest.mark.parametrize("loader", [load_config, create_app])
@pytest.mark.parametrize("name", ["SECRET_KEY", "FINGERPRINT_KEY", "ENCRYPTION_KEYS"])
def test_production_refuses_a_missing_secret(production, loader, name):
    del production[name]
    with pytest.raises(ConfigError, match=name):
        loader(production)


@pytest.mark.parametrize("name", ["SECRET_KEY", "FINGERPRINT_KEY"])
def test_production_needs_32_byte_secrets(production, name):
    with pytest.raises(ConfigError, match=name):
        load_config({**production, name: "s" * 31})
    with pytest.raises(ConfigError, match=name):
        load_config({**production, name: "é" * 15 + "s"})  # 16 characters, 31 bytes
    assert load_config({**production, name: "s" * 32})[name] == "s" * 32


@pytest.mark.parametrize("value", [
    "k1:not base64!",
    key_entry("k1", 31),
    key_entry("k1", 33),
    f"{key_entry('k1')},{key_entry('k1')}",
    key_entry(""),
    base64.b64encode(b"k" * 32).decode(),
    f"{key_entry('k1')},k2:",
])
@pytest.mark.parametrize("env", ["production", "development"])
def test_malformed_encryption_keys_are_refused(production, value, env):
    with pytest.raises(ConfigError, match="ENCRYPTION_KEYS"):
        load_config({**production, "APP_ENV": env, "ENCRYPTION_KEYS": value})


def test_encryption_keys_keep_their_order(production):
    config = load_config({**production, "ENCRYPTION_KEYS": f" {key_entry('new')} , {key_entry('old')}"})
    assert [kid for kid, _ in config["ENCRYPTION_KEYS"]] == ["new", "old"]


def test_development_makes_random_secrets():
    first, second = load_config({"APP_ENV": "development"}), load_config({"APP_ENV": "development"})
    for name in ("SECRET_KEY", "FINGERPRINT_KEY"):
        assert len(first[name].encode()) >= 32
        assert first[name] != second[name]


@pytest.mark.parametrize("name, value", [
    ("PORT", "abc"),
    ("PORT", "70000"),
    ("PORT", "0"),
    ("DB_PORT", "-5"),
    ("METRICS_PORT", "70000"),
    ("METRICS_PORT", "http"),
    ("DB_POOL_SIZE", "0"),
    ("DB_POOL_TIMEOUT", "0"),
    ("PASSWORD_ITERATIONS", "0"),
    ("ACCESS_TOKEN_TTL", "ten"),
    ("PROVIDER_TIMEOUT", "nan"),
    ("SELF_TOPUP_ENABLED", "maybe"),
    ("MAX_TOPUP", "-1"),
    ("MAX_TOPUP", "0"),
    ("MAX_TOPUP", "lots"),
    ("MAX_TOPUP", "Infinity"),
    ("MAX_INFERENCE_BODY", "20 MiB"),
    ("MAX_INFERENCE_BODY", "1000"),
    ("APP_ENV", "staging"),
    ("LOG_LEVEL", "LOUD"),
    ("BYOK_FEE_RATE", "-0.01"),
    ("BYOK_FEE_RATE", "1.5"),
    ("BYOK_FEE_RATE", "NaN"),
    ("BYOK_FEE_RATE", "five percent"),
])
def test_bad_typed_values_are_refused_by_name(production, name, value):
    with pytest.raises(ConfigError, match=f"^{name}: "):
        load_config({**production, name: value})


@pytest.mark.parametrize("value, expected", [("true", True), ("ON", True), ("0", False), ("no", False)])
def test_flags(production, value, expected):
    assert load_config({**production, "SELF_TOPUP_ENABLED": value})["SELF_TOPUP_ENABLED"] is expected


def test_precedence_overrides_then_environment_then_env_file_then_defaults(production, monkeypatch, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=1001\nHOST=from-file\nJWT_ISSUER=file-issuer\n")
    monkeypatch.setenv("ENV_FILE", str(env_file))
    monkeypatch.setenv("PORT", "1002")
    monkeypatch.setenv("HOST", "from-env")
    config = load_config({**production, "PORT": "1003"})
    assert config["PORT"] == 1003
    assert config["HOST"] == "from-env"
    assert config["JWT_ISSUER"] == "file-issuer"
    assert config["JWT_AUDIENCE"] == SETTINGS["JWT_AUDIENCE"][0]


def test_env_file_supplies_secrets(monkeypatch, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f"SECRET_KEY={'s' * 40}\nFINGERPRINT_KEY={'f' * 40}\n"
                        f"ENCRYPTION_KEYS={key_entry('k1')}\nDATABASE_URL={DATABASE_URL}\n")
    monkeypatch.setenv("ENV_FILE", str(env_file))
    config = load_config()
    assert config["SECRET_KEY"] == "s" * 40
    assert config["DATABASE_URL"] == DATABASE_URL


def test_db_variables_build_the_database_url(production):
    password = "p@ss:w/rd %?#"
    config = load_config({**production, "DATABASE_URL": "", "DB_HOST": "db.internal", "DB_PORT": "6543",
                          "DB_NAME": "market", "DB_USER": "svc", "DB_PASSWORD": password})
    assert config["DATABASE_URL"] == "postgresql://svc:p%40ss%3Aw%2Frd%20%25%3F%23@db.internal:6543/market"
    assert parse_dsn(config["DATABASE_URL"])["password"] == password
    assert config["MIGRATE_DATABASE_URL"] == config["DATABASE_URL"]


@pytest.mark.parametrize("host", ["db.internal", "10.0.0.5", "::1"])
def test_db_variables_url_keeps_host_and_port(production, host):
    config = load_config({**production, "DATABASE_URL": "", "DB_HOST": host, "DB_PORT": "6543"})
    parts = parse_dsn(config["DATABASE_URL"])
    assert (parts["host"], parts["port"], parts["dbname"]) == (host, "6543", "qmarket")


def test_database_url_wins_over_db_variables(production):
    config = load_config({**production, "DB_HOST": "db.internal"})
    assert config["DATABASE_URL"] == DATABASE_URL


def test_the_settings_know_no_embedded_cluster(production, tmp_path, monkeypatch):
    """An embedded cluster's .env settings are `make run`'s (devtools): the
    service reads only the URLs it writes beside them."""
    env_file = tmp_path / ".env"
    env_file.write_text("EMBEDDED_DB_PORT=54321\nEMBEDDED_DB_PASSWORD=pw\nEMBEDDED_DB_OWNER_PASSWORD=pw\n")
    monkeypatch.setenv("ENV_FILE", str(env_file))
    config = load_config({**production, "DATABASE_URL": ""})
    assert config["DATABASE_URL"] == config["MIGRATE_DATABASE_URL"] == ""
    assert not [name for name in config if "EMBEDDED" in name or name == "INSTANCE_ID"]


def test_env_example_lists_every_setting():
    text = (PROJECT_ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^\s*#?\s*([A-Z][A-Z0-9_]*)\s*=", text, flags=re.MULTILINE))
    assert sorted(set(SETTINGS) - listed) == []
