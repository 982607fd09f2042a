"""Stored provider keys, shown masked."""
from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field

from app.schemas.fields import API_KEY_PATTERN, Provider, Request, Response, Text


ApiKeyText = Annotated[str, Field(min_length=16, max_length=256, pattern=API_KEY_PATTERN)]
Label = Annotated[Text, Field(min_length=1, max_length=100)]


class NewKeyRequest(Request):
    provider: Provider  # one of the configured providers that take a key
    api_key: ApiKeyText
    label: Label | None = None


class StoredKey(Response):
    id: UUID
    provider: str
    label: str | None
    last4: str
    created_at: datetime
    last_used_at: datetime | None


class KeyList(Response):
    keys: list[StoredKey]
    next_cursor: str | None = None
