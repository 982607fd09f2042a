"""The key vault: endpoints 6–8. A stored key is never shown again, only its
provider, label and last four characters."""
import uuid

from flask import Blueprint, current_app, g

from app.auth import require_auth
from app.errors import Conflict, NotFound
from app.extensions import db
from app.openapi import documented
from app.requests import json_body
from app.schemas import KeyList, NewKeyRequest, StoredKey

bp = Blueprint("keys", __name__, url_prefix="/keys")

MAX_KEYS_PER_USER = 50


@bp.post("")
@documented("Store a provider API key (shown once: only its last four characters come back)", {201: StoredKey},
            request=NewKeyRequest, errors=[409])
@require_auth
def add_key():
    body = json_body(NewKeyRequest)
    if db.count_api_keys(g.user_id) >= MAX_KEYS_PER_USER:
        raise Conflict(f"An account may hold at most {MAX_KEYS_PER_USER} keys; delete one first.",
                       code="key_limit_reached")
    vault = current_app.extensions["vault"]
    stored = db.store_api_key(
        g.user_id, body.provider, body.label,
        sealed=vault.encrypt(body.api_key, g.user_id, body.provider),
        fingerprint=vault.fingerprint(body.api_key),
        last4=body.api_key[-4:],
    )
    if stored is None:
        raise Conflict("You have already stored this key.", code="duplicate_key")
    return StoredKey.model_validate(stored).model_dump(mode="json"), 201, {"Location": f"/api/v1/keys/{stored['id']}"}


@bp.get("")
@documented("Your stored keys, masked", {200: KeyList})
@require_auth
def list_keys():
    keys = [StoredKey.model_validate(row) for row in db.list_api_keys(g.user_id)]
    return KeyList(keys=keys).model_dump(mode="json")


@bp.delete("/<key_id>")
@documented("Delete a key and its ciphertext", {204: None})
@require_auth
def delete_key(key_id):
    try:
        key_id = uuid.UUID(key_id)
    except ValueError:
        raise NotFound() from None
    if not db.delete_api_key(g.user_id, key_id):
        raise NotFound()
    return "", 204
