"""Operators' tests: the owner's login is MIGRATE_DATABASE_URL, as `flask admin grant` needs."""
import pytest

from tests.support import settings_for


@pytest.fixture
def settings(database):
    return settings_for(database.app_url, MIGRATE_DATABASE_URL=database.owner_url)
