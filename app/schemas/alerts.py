"""Webhooks for alerts, and the log of each alert's deliveries."""
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from app.schemas.fields import Request, Response, Text

MAX_WEBHOOK_URL = 2000
ALERT_KINDS = ("low_balance", "key_spend_80", "key_spend_100", "daily_limit_reached")


class NewWebhookRequest(Request):
    url: Annotated[Text, Field(min_length=1, max_length=MAX_WEBHOOK_URL)]


class Webhook(Response):
    id: UUID
    url: str
    created_at: datetime
    # Its newest delivery's status: null before the first alert.
    last_delivery_status: Literal["pending", "delivered", "failed"] | None = None


class NewWebhook(Webhook):
    """The answer to a registration: the only one that holds the signing secret."""
    secret: str


class WebhookPage(Response):
    webhooks: list[Webhook]
    next_cursor: str | None


class AlertDelivery(Response):
    id: UUID  # the delivery id: the same on every retry, for the receiver to deduplicate on
    channel: Literal["webhook", "email"]
    webhook_id: UUID | None
    kind: Literal[ALERT_KINDS]
    payload: dict
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_row(cls, row):
        return cls(**{**row, "next_attempt_at": row["next_attempt_at"] if row["status"] == "pending" else None})


class AlertDeliveryPage(Response):
    deliveries: list[AlertDelivery]
    next_cursor: str | None
