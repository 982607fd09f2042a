"""The key vault's cryptography: AES-GCM under the newest of ENCRYPTION_KEYS,
with associated data binding each ciphertext to its user and provider, and an
HMAC fingerprint (under FINGERPRINT_KEY) that finds duplicates without
decrypting anything."""
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class VaultError(Exception):
    """A stored key cannot be decrypted. The message never holds key material."""


class Vault:
    def __init__(self, encryption_keys, fingerprint_key):
        """encryption_keys: [(kid, 32 bytes)], newest first."""
        self._keys = dict(encryption_keys)
        self._newest = encryption_keys[0][0] if encryption_keys else None
        self._fingerprint_key = fingerprint_key.encode()

    @property
    def newest_kid(self):
        return self._newest

    def encrypt(self, plaintext, user_id, provider):
        """(kid, nonce, ciphertext) under the newest key."""
        if self._newest is None:
            raise VaultError("no encryption key is configured (ENCRYPTION_KEYS)")
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._keys[self._newest]).encrypt(nonce, plaintext.encode(), _binding(user_id, provider))
        return self._newest, nonce, sealed

    def decrypt(self, kid, nonce, ciphertext, user_id, provider):
        key = self._keys.get(kid)
        if key is None:
            raise VaultError(f"the encryption key {kid!r} is not in ENCRYPTION_KEYS")
        try:
            return AESGCM(key).decrypt(bytes(nonce), bytes(ciphertext), _binding(user_id, provider)).decode()
        except (InvalidTag, ValueError):
            raise VaultError("a stored key failed to decrypt (tampered, or bound to another user)") from None

    def fingerprint(self, plaintext):
        return hmac.new(self._fingerprint_key, plaintext.encode(), hashlib.sha256).digest()


def _binding(user_id, provider):
    return f"qmarket/api_key/v1/{user_id}/{provider}".encode()
