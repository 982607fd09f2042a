"""Webhooks, and the alert outbox (alert_deliveries) that the delivery loop
works through. Alerts themselves are raised in the database: by a trigger on
the ledger (a balance below its threshold, a key at 80% of its limit) and by
note_spend_limit_reached (a call refused by a limit)."""
WEBHOOK_COLUMNS = "id, url, created_at"
# A webhook's state is its newest delivery's: none yet, pending, delivered or failed.
LAST_DELIVERY = """
    (SELECT d.status FROM alert_deliveries d
      WHERE d.webhook_id = w.id AND d.user_id = w.user_id
      ORDER BY d.created_at DESC, d.id DESC LIMIT 1) AS last_delivery_status"""
DELIVERY_COLUMNS = ("id, channel, webhook_id, kind, payload, status, attempts, last_status, last_error, "
                    "next_attempt_at, created_at, delivered_at")


class AlertsSQL:
    """A part of DatabaseService (database/service.py), which gives `_maybe(tx)` and `_alone(tx)`."""

    def create_webhook(self, user_id, url, sealed_secret, tx=None):
        """`sealed_secret`: the vault's (kid, nonce, ciphertext) of the signing secret."""
        kid, nonce, ciphertext = sealed_secret
        with self._maybe(tx, user_id) as cursor:
            return cursor.one(
                f"""
                INSERT INTO webhooks (user_id, url, encryption_kid, nonce, encrypted_secret)
                VALUES (%(user_id)s, %(url)s, %(kid)s, %(nonce)s, %(ciphertext)s)
                RETURNING {WEBHOOK_COLUMNS}
                """,
                {"user_id": user_id, "url": url, "kid": kid, "nonce": nonce, "ciphertext": ciphertext},
            )

    def webhooks_to_reseal(self, newest_kid, tx=None):
        """The webhooks whose secret is not under the encryption key
        `newest_kid` (id, user_id, sealed), and how many already are, read together."""
        with self._maybe(tx) as cursor:
            stale = cursor.all(
                """
                SELECT id, user_id, encryption_kid, nonce, encrypted_secret
                  FROM webhooks
                 WHERE encryption_kid <> %(newest)s
                """,
                {"newest": newest_kid},
            )
            current = cursor.one("SELECT count(*) AS n FROM webhooks WHERE encryption_kid = %(newest)s",
                                 {"newest": newest_kid})["n"]
        for row in stale:
            row["sealed"] = (row.pop("encryption_kid"), row.pop("nonce"), row.pop("encrypted_secret"))
        return stale, current

    def reseal_webhook_secret(self, webhook_id, old, new, tx=None):
        """Replaces the secret's sealed form `old` by `new`: False, and the
        webhook left as it is, when it was deleted or changed meanwhile."""
        (old_kid, old_nonce, _), (kid, nonce, ciphertext) = old, new
        with self._maybe(tx) as cursor:
            return cursor.run(
                """
                UPDATE webhooks
                   SET encryption_kid = %(kid)s, nonce = %(nonce)s, encrypted_secret = %(ciphertext)s
                 WHERE id = %(id)s AND encryption_kid = %(old_kid)s AND nonce = %(old_nonce)s
                """,
                {"kid": kid, "nonce": nonce, "ciphertext": ciphertext, "id": webhook_id,
                 "old_kid": old_kid, "old_nonce": old_nonce},
            ) == 1

    def count_webhooks(self, user_id, tx=None):
        with self._alone(tx) as cursor:
            return cursor.one("SELECT count(*) AS n FROM webhooks WHERE user_id = %(user_id)s",
                              {"user_id": user_id})["n"]

    def list_webhooks(self, user_id, limit, after=None, tx=None):
        created_at, webhook_id = after or (None, None)
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                SELECT w.id, w.url, w.created_at, {LAST_DELIVERY}
                  FROM webhooks w
                 WHERE user_id = %(user_id)s
                   AND (%(created_at)s::timestamptz IS NULL OR (created_at, id) < (%(created_at)s, %(id)s))
                 ORDER BY created_at DESC, id DESC
                 LIMIT %(limit)s
                """,
                {"user_id": user_id, "created_at": created_at, "id": webhook_id, "limit": limit},
            )

    def delete_webhook(self, user_id, webhook_id, tx=None):
        """False when the user has no such webhook. Its deliveries go with it."""
        with self._maybe(tx, user_id) as cursor:
            return cursor.run("DELETE FROM webhooks WHERE id = %(id)s AND user_id = %(user_id)s",
                              {"id": webhook_id, "user_id": user_id}) == 1

    def webhook_exists(self, user_id, webhook_id, tx=None):
        with self._alone(tx) as cursor:
            return cursor.one("SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = %(id)s AND user_id = %(user_id)s) "
                              "AS found", {"id": webhook_id, "user_id": user_id})["found"]

    def list_alert_deliveries(self, user_id, limit, after=None, webhook_id=None, tx=None):
        """The user's deliveries newest first; only those to `webhook_id` when given."""
        created_at, delivery_id = after or (None, None)
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                SELECT {DELIVERY_COLUMNS}
                  FROM alert_deliveries
                 WHERE user_id = %(user_id)s
                   AND (%(webhook_id)s::uuid IS NULL OR webhook_id = %(webhook_id)s)
                   AND (%(created_at)s::timestamptz IS NULL OR (created_at, id) < (%(created_at)s, %(id)s))
                 ORDER BY created_at DESC, id DESC
                 LIMIT %(limit)s
                """,
                {"user_id": user_id, "webhook_id": webhook_id, "created_at": created_at, "id": delivery_id,
                 "limit": limit},
            )

    def note_spend_limit_reached(self, user_id, amount, daily_limit, access_key_id, tx=None):
        """Alerts (once per period) for the limit a refused hold of `amount` passed; how many were raised."""
        with self._maybe(tx, user_id) as cursor:
            return cursor.one(
                "SELECT note_spend_limit_reached(%(user_id)s, %(amount)s, %(daily_limit)s, %(key)s) AS raised",
                {"user_id": user_id, "amount": amount, "daily_limit": daily_limit, "key": access_key_id},
            )["raised"]

    def claim_due_deliveries(self, batch, lease_seconds, tx=None):
        """Up to `batch` deliveries due now, each claimed for `lease_seconds`
        (its next attempt moved that far on, committed before any is sent): a
        worker that dies holding one leaves it to be claimed again then, so
        each is delivered at least once. SKIP LOCKED: workers never wait on each other."""
        with self._maybe(tx) as cursor:
            return cursor.all(
                """
                UPDATE alert_deliveries d
                   SET next_attempt_at = now() + make_interval(secs => %(lease)s)
                  FROM (SELECT id FROM alert_deliveries
                         WHERE status = 'pending' AND next_attempt_at <= now()
                         ORDER BY next_attempt_at
                         LIMIT %(batch)s
                           FOR UPDATE SKIP LOCKED) due
                 WHERE d.id = due.id
                RETURNING d.id, d.user_id, d.channel, d.webhook_id, d.kind, d.payload, d.attempts,
                          (SELECT row_to_json(hook) FROM (
                               SELECT w.url, w.encryption_kid, encode(w.nonce, 'base64') AS nonce,
                                      encode(w.encrypted_secret, 'base64') AS encrypted_secret
                                 FROM webhooks w WHERE w.id = d.webhook_id) hook) AS webhook,
                          (SELECT u.email FROM users u WHERE u.id = d.user_id) AS email
                """,
                {"batch": batch, "lease": lease_seconds},
            )

    def finish_delivery(self, delivery_id, attempts, delivered, last_status, last_error, retry_in, tx=None):
        """Records one attempt: delivered, to be tried again in `retry_in`
        seconds, or (retry_in None) failed for good."""
        with self._maybe(tx) as cursor:
            cursor.run(
                """
                UPDATE alert_deliveries
                   SET attempts = %(attempts)s,
                       last_status = %(last_status)s,
                       last_error = left(%(last_error)s, 500),
                       status = CASE WHEN %(delivered)s THEN 'delivered'
                                     WHEN %(retry_in)s::float IS NULL THEN 'failed' ELSE 'pending' END,
                       delivered_at = CASE WHEN %(delivered)s THEN now() END,
                       next_attempt_at = now() + make_interval(secs => coalesce(%(retry_in)s::float, 0))
                 WHERE id = %(id)s
                """,
                {"id": delivery_id, "attempts": attempts, "delivered": delivered, "last_status": last_status,
                 "last_error": last_error, "retry_in": retry_in},
            )

