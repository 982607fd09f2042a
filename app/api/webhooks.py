"""Webhooks for alerts (register: the signing secret is shown in that answer
only; list; delete) and the log of every alert delivery, webhook or email.
What is sent and how it is signed: app/alerts.py."""
from flask import current_app

from app.alerts import WEBHOOK_BINDING, RefusedAddress, check_webhook_url, new_secret
from app.api.contract import ACCOUNT, body, caller, other_responses, query, response
from app.api.guards import uuid_from_path
from app.api.openapi import CURSOR, LIMIT
from app.api.pagination import newest_first
from app.api.pipeline import OperationBlueprint
from app.errors import KeyLimitReached, NotFound, ValidationFailed
from app.extensions import db, vault
from app.schemas.alerts import AlertDelivery, AlertDeliveryPage, NewWebhook, NewWebhookRequest, Webhook, WebhookPage

bp = OperationBlueprint("webhooks", __name__, url_prefix="")

MAX_WEBHOOKS_PER_USER = 10


@bp.post("/webhooks")
@response(NewWebhook, 201)
@other_responses(409)
@caller(ACCOUNT)
@body(NewWebhookRequest)
def create_webhook(caller, new_webhook):
    """Register a URL for your alerts (its signing secret is shown in this answer only)"""
    try:
        check_webhook_url(new_webhook.url, current_app.config)
    except RefusedAddress as refused:
        raise ValidationFailed(details={"url": str(refused)}) from None
    if db.count_webhooks(caller.user_id) >= MAX_WEBHOOKS_PER_USER:
        raise KeyLimitReached(f"An account may register at most {MAX_WEBHOOKS_PER_USER} webhooks; delete one first.")
    secret = new_secret()
    row = db.create_webhook(caller.user_id, new_webhook.url, vault.encrypt(secret, caller.user_id, WEBHOOK_BINDING))
    return NewWebhook(**row, secret=secret), {"Location": f"/api/v1/webhooks/{row['id']}"}


@bp.get("/webhooks")
@response(WebhookPage)
@query(LIMIT, CURSOR)
@caller(ACCOUNT)
def list_webhooks(caller):
    """Your webhooks, newest first (never their secrets)"""
    page, next_cursor = newest_first(lambda limit, after: db.list_webhooks(caller.user_id, limit, after=after))
    return WebhookPage(webhooks=[Webhook(**row) for row in page], next_cursor=next_cursor)


@bp.delete("/webhooks/<webhook_id>")
@response(None, 204)
@caller(ACCOUNT)
def delete_webhook(caller, webhook_id):
    """Delete a webhook: nothing more is sent to it"""
    if not db.delete_webhook(caller.user_id, uuid_from_path(webhook_id)):
        raise NotFound()


@bp.get("/webhooks/<webhook_id>/deliveries")
@response(AlertDeliveryPage)
@query(LIMIT, CURSOR)
@caller(ACCOUNT)
def list_webhook_deliveries(caller, webhook_id):
    """One webhook's deliveries, newest first: each attempt's outcome"""
    webhook_id = uuid_from_path(webhook_id)
    if not db.webhook_exists(caller.user_id, webhook_id):
        raise NotFound()
    return _delivery_page(caller.user_id, webhook_id)


@bp.get("/alerts/deliveries")
@response(AlertDeliveryPage)
@query(LIMIT, CURSOR)
@caller(ACCOUNT)
def list_alert_deliveries(caller):
    """Your alerts' deliveries, newest first: each attempt's outcome, by webhook or email"""
    return _delivery_page(caller.user_id, None)


def _delivery_page(user_id, webhook_id):
    page, next_cursor = newest_first(lambda limit, after: db.list_alert_deliveries(
        user_id, limit, after=after, webhook_id=webhook_id))
    return AlertDeliveryPage(deliveries=[AlertDelivery.from_row(row) for row in page], next_cursor=next_cursor)
