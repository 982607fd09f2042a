"""Access keys for programs: create (the key is shown in that answer only),
list and revoke. The keys open the inference API, never this account API."""
import base64
import secrets

from app.api.callers import ACCESS_KEY_PREFIX, access_key_hash
from app.api.contract import ACCOUNT, body, caller, other_responses, query, response
from app.api.guards import uuid_from_path
from app.api.openapi import CURSOR, LIMIT
from app.api.pagination import newest_first
from app.api.pipeline import OperationBlueprint
from app.errors import KeyLimitReached, NotFound, ValidationFailed
from app.extensions import db
from app.schemas import AccessKey, AccessKeyPage, NewAccessKey, NewAccessKeyRequest

bp = OperationBlueprint("access_keys", __name__, url_prefix="/access-keys")

MAX_ACCESS_KEYS_PER_USER = 50
KEY_BYTES = 32


def new_access_key():
    """`qm-` and 32 random bytes in unpadded base64url (43 characters)."""
    return ACCESS_KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


def _allowed_models(new_key):
    """The new key's allowed_models without repeats, once the rules that need
    more than one field, or the catalog, hold."""
    if (new_key.spend_limit is None) != (new_key.spend_limit_period is None):
        missing = "spend_limit_period" if new_key.spend_limit_period is None else "spend_limit"
        raise ValidationFailed(details={missing: "is required when the other of spend_limit and "
                                                 "spend_limit_period is given"})
    if new_key.allowed_models is None:
        return None
    models = list(dict.fromkeys(new_key.allowed_models))
    unknown = db.models_not_in_catalog(models)
    if unknown:
        raise ValidationFailed(details={"allowed_models": "holds ids that are no model of the catalog: "
                                                          + ", ".join(unknown)})
    return models


@bp.post("")
@response(NewAccessKey, 201)
@other_responses(409)
@caller(ACCOUNT)
@body(NewAccessKeyRequest)
def create_access_key(caller, new_key):
    """Issue an access key for a program (the key is shown in this answer only)"""
    allowed_models = _allowed_models(new_key)
    if db.count_live_access_keys(caller.user_id) >= MAX_ACCESS_KEYS_PER_USER:
        raise KeyLimitReached(f"An account may hold at most {MAX_ACCESS_KEYS_PER_USER} access keys; "
                              "revoke one first.")
    key = new_access_key()
    row = db.create_access_key(caller.user_id, new_key.name, access_key_hash(key), key[-4:], allowed_models,
                               new_key.spend_limit, new_key.spend_limit_period, new_key.expires_at)
    return NewAccessKey.from_row(row, key=key), {"Location": f"/api/v1/access-keys/{row['id']}"}


@bp.get("")
@response(AccessKeyPage)
@query(LIMIT, CURSOR)
@caller(ACCOUNT)
def list_access_keys(caller):
    """Your access keys not revoked, newest first (never the keys themselves)"""
    page, next_cursor = newest_first(lambda limit, after: db.list_access_keys(caller.user_id, limit, after=after))
    return AccessKeyPage(access_keys=[AccessKey.from_row(row) for row in page], next_cursor=next_cursor)


@bp.delete("/<access_key_id>")
@response(None, 204)
@caller(ACCOUNT)
def revoke_access_key(caller, access_key_id):
    """Revoke an access key: it stops working at once"""
    if not db.revoke_access_key(caller.user_id, uuid_from_path(access_key_id)):
        raise NotFound()
