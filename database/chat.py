"""Chat sessions and their messages, and the two round trips of a billed call."""
import random
from base64 import b64decode

from psycopg2.extras import Json

from database.vocab import USAGE_BUCKETS

SESSION_COLUMNS = ("id, model_id, title, message_count, total_prompt_tokens, total_completion_tokens, total_cost, "
                   "created_at, updated_at")
MESSAGE_COLUMNS = "id, role, content, prompt_tokens, completion_tokens, cost, created_at"


class ChatSQL:
    """A part of DatabaseService (database/service.py), which gives `_maybe(tx)` and `_alone(tx)`."""

    def create_session(self, user_id, model_id, title, tx=None):
        """The new session, or None when the model is not in the active catalog."""
        with self._maybe(tx, user_id) as cursor:
            return cursor.one(
                f"""
                INSERT INTO chat_sessions (user_id, model_id, title)
                SELECT %(user_id)s, id, %(title)s
                  FROM models
                 WHERE id = %(model_id)s
                   AND is_active
             RETURNING {SESSION_COLUMNS}
                """,
                {"user_id": user_id, "model_id": model_id, "title": title},
            )

    def list_sessions(self, user_id, limit, after=None, tx=None):
        """Newest first; `after` is the (created_at, id) of the previous page's last."""
        created_at, session_id = after or (None, None)
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                SELECT {SESSION_COLUMNS}
                  FROM chat_sessions
                 WHERE user_id = %(user_id)s
                   AND (%(created_at)s::timestamptz IS NULL OR (created_at, id) < (%(created_at)s, %(id)s))
                 ORDER BY created_at DESC, id DESC
                 LIMIT %(limit)s
                """,
                {"user_id": user_id, "created_at": created_at, "id": session_id, "limit": limit},
            )

    def session(self, user_id, session_id, tx=None):
        with self._alone(tx) as cursor:
            return cursor.one(
                f"""
                SELECT {SESSION_COLUMNS}
                  FROM chat_sessions
                 WHERE id = %(id)s
                   AND user_id = %(user_id)s
                """,
                {"id": session_id, "user_id": user_id},
            )

    def list_messages(self, session_id, limit, after_id=None, tx=None):
        """Oldest first, from after message `after_id`."""
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                SELECT {MESSAGE_COLUMNS}
                  FROM chat_history
                 WHERE session_id = %(session_id)s
                   AND (%(after_id)s::bigint IS NULL OR id > %(after_id)s)
                 ORDER BY id
                 LIMIT %(limit)s
                """,
                {"session_id": session_id, "after_id": after_id, "limit": limit},
            )

    def delete_session(self, user_id, session_id, tx=None):
        """Deletes the session and its messages, never a transaction."""
        with self._maybe(tx, user_id) as cursor:
            return cursor.run(
                "DELETE FROM chat_sessions WHERE id = %(id)s AND user_id = %(user_id)s",
                {"id": session_id, "user_id": user_id},
            ) == 1

    def chat_call_context(self, user_id, session_id, max_tokens, default_max_tokens, fixed_tokens,
                          message_overhead, tx=None):
        """Everything a chat call needs, in one round trip: the user's token
        generation (None: no such active user), the session's model, prices and
        limits (session_id None: not the user's session), the call's max tokens
        (asked for, else the model's default), its deployments, every key the
        user stored and their preferences (as model_call_context gives them),
        and the newest history that fits the context window beside
        `fixed_tokens` (the request's overhead and the new message)."""
        with self._alone(tx) as cursor:
            row = cursor.one(
                """
                SELECT *
                  FROM chat_call_context(%(user_id)s, %(session_id)s, %(max_tokens)s, %(default_max_tokens)s,
                                         %(fixed_tokens)s, %(message_overhead)s)
                """,
                {"user_id": user_id, "session_id": session_id, "max_tokens": max_tokens,
                 "default_max_tokens": default_max_tokens, "fixed_tokens": fixed_tokens,
                 "message_overhead": message_overhead},
            )
        if row is None:
            return {"token_generation": None}
        return _with_user_keys(row)

    def model_call_context(self, user_id, model_name, max_tokens, default_max_tokens, tx=None):
        """What a call outside any session needs, in one round trip: the user's
        token generation (None: no such active user), the model `model_name`
        resolves to (`model_id` None: none) with its prices (the price book's
        version in force: `price_version_id`, None when none is), limits, features,
        input modalities and deployments, the call's max tokens (asked for,
        else the model's default), every key the user stored, sealed, newest
        first (`user_keys`: id, provider, encryption_kid, nonce,
        encrypted_key), and the user's spending limits and preferences.

        A name resolves to the model whose id it is; else the model it is an
        alias of; else the one active model whose bare name (the id after the
        slash: gpt-4o) it is. When two active models share the bare name it
        resolves to none, as an unknown name does. A name that is an alias
        list's resolves to no model; `listed_models` are the list's (else None)."""
        with self._alone(tx) as cursor:
            row = cursor.one(
                "SELECT * FROM model_call_context(%(user_id)s, %(model_name)s, %(max_tokens)s, %(default_max_tokens)s)",
                {"user_id": user_id, "model_name": model_name, "max_tokens": max_tokens,
                 "default_max_tokens": default_max_tokens},
            )
        if row is None:
            return {"token_generation": None, "model_id": None}
        return _with_user_keys(row)

    def settle_chat_call(self, user_id, session_id, hold, api_key_id, question, answer, charge, release_metadata,
                         tx=None):
        """Releases the unused part of `hold`, saves the exchange (the texts
        `question` and `answer`; unless the session is gone, or there is none:
        saved = false), keeps the charge by part (`charge`, an
        app.pricing.Charge) and counts the usage, in one round trip.
        release_metadata goes on the release row. Without `tx` it is one
        statement committed in its own round trip, safe to send again (the
        function answers a settle it already made)."""
        with self._alone(tx, user_id) as cursor:
            return cursor.one(
                """
                SELECT *
                  FROM settle_chat_call(%(user_id)s, %(session_id)s, %(model_id)s, %(api_key_id)s, %(hold_id)s,
                                        %(hold_amount)s, %(question)s, %(prompt_tokens)s, %(input_cost)s, %(answer)s,
                                        %(completion_tokens)s, %(output_cost)s, %(bucket)s::smallint,
                                        %(release_metadata)s, %(cache_read_tokens)s, %(cache_write_tokens)s,
                                        %(cache_write_1h_tokens)s, %(reasoning_tokens)s, %(cached_input_cost)s,
                                        %(cache_write_cost)s, %(served_provider)s, %(hold_token)s)
                """,
                {"user_id": user_id, "session_id": session_id, "model_id": hold.model_id, "api_key_id": api_key_id,
                 "hold_id": hold.id, "hold_amount": hold.amount, "question": question, "answer": answer,
                 "prompt_tokens": charge.prompt_tokens, "completion_tokens": charge.completion_tokens,
                 "input_cost": charge.input_cost, "output_cost": charge.output_cost,
                 "cache_read_tokens": charge.cache_read_tokens, "cache_write_tokens": charge.cache_write_tokens,
                 "cache_write_1h_tokens": charge.cache_write_1h_tokens, "reasoning_tokens": charge.reasoning_tokens,
                 "cached_input_cost": charge.cached_input_cost, "cache_write_cost": charge.cache_write_cost,
                 "served_provider": hold.route.provider, "hold_token": hold.token,
                 "bucket": random.randrange(USAGE_BUCKETS), "release_metadata": Json(release_metadata)},
            )


def _with_user_keys(row):
    """`row` with its `user_keys` (sealed, their bytes sent as base64) decoded."""
    row["user_keys"] = [{**stored, "nonce": b64decode(stored["nonce"]),
                         "encrypted_key": b64decode(stored["encrypted_key"])} for stored in row["user_keys"] or []]
    return row
