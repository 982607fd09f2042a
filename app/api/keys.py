"""The key vault: endpoints 6–8. A stored key is never shown again, only its
provider, label and last four characters."""
from app.api.bodies import configured_provider
from app.api.contract import ACCOUNT, body, caller, other_responses, response
from app.api.guards import uuid_from_path
from app.api.pipeline import OperationBlueprint
from app.errors import DuplicateKey, KeyLimitReached, NotFound
from app.extensions import db, vault
from app.schemas import KeyList, NewKeyRequest, StoredKey

bp = OperationBlueprint("keys", __name__, url_prefix="/keys")

MAX_KEYS_PER_USER = 50


@bp.post("")
@response(StoredKey, 201)
@other_responses(409)
@caller(ACCOUNT)
@body(NewKeyRequest)
def add_key(caller, new_key):
    """Store a provider API key (shown once: only its last four characters come back)"""
    configured_provider("provider", new_key.provider, takes_keys=True)
    if db.count_api_keys(caller.user_id) >= MAX_KEYS_PER_USER:
        raise KeyLimitReached(f"An account may hold at most {MAX_KEYS_PER_USER} keys; delete one first.")
    stored = db.store_api_key(
        caller.user_id, new_key.provider, new_key.label,
        sealed=vault.encrypt(new_key.api_key, caller.user_id, new_key.provider),
        fingerprint=vault.fingerprint(new_key.api_key),
        last4=new_key.api_key[-4:],
    )
    if stored is None:
        raise DuplicateKey()
    return StoredKey.model_validate(stored), {"Location": f"/api/v1/keys/{stored['id']}"}


@bp.get("")
@response(KeyList)
@caller(ACCOUNT)
def list_keys(caller):
    """Your stored keys, masked"""
    return KeyList(keys=[StoredKey.model_validate(row) for row in db.list_api_keys(caller.user_id)])


@bp.delete("/<key_id>")
@response(None, 204)
@caller(ACCOUNT)
def delete_key(caller, key_id):
    """Delete a key and its ciphertext"""
    if not db.delete_api_key(caller.user_id, uuid_from_path(key_id)):
        raise NotFound()
