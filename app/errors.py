"""One JSON error path: every failure leaves as
`{"error": {"code", "message", "details"}}` with the right status.

Every error the API answers with is a class here; /openapi.json lists each
status's codes from them (ERROR_CODES), in the order they are defined."""
import logging

from flask import current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from app.observability import describe_error, loggable_traceback
from database.errors import DatabaseUnavailable

log = logging.getLogger(__name__)
# status → the codes an answer with that status may carry, filled as classes are defined.
ERROR_CODES = {}


class APIError(Exception):
    """An error answer. A subclass that sets its own `code` is listed in ERROR_CODES."""
    status = 400
    code = "bad_request"
    message = "The request could not be processed."

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            codes = ERROR_CODES.setdefault(cls.status, [])
            if cls.code not in codes:
                codes.append(cls.code)

    def __init__(self, message=None, details=None, *, headers=None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details or {}
        self.headers = headers or {}


# ----------------------------------------------------------------- 400

class ValidationFailed(APIError):
    code = "validation_error"
    message = "The request has invalid fields."


class InvalidJSON(APIError):
    code = "invalid_json"
    message = "The request body is not valid JSON."


# ----------------------------------------------------------------- 401

class Unauthorized(APIError):
    status = 401
    code = "unauthorized"
    message = "Authentication is required."


class TokenExpired(Unauthorized):
    code = "token_expired"
    message = "The token has expired."


class InvalidToken(Unauthorized):
    code = "invalid_token"
    message = "The token is invalid or has been revoked."


class InvalidAccessKey(InvalidToken):
    message = "The access key is unknown, revoked or expired."


# ----------------------------------------------------------------- 402, 403, 404

class InsufficientFunds(APIError):
    status = 402
    code = "insufficient_funds"
    message = ("The balance does not cover the most this message can cost; add funds with "
               "POST /api/v1/balance/funds, or lower max_tokens.")


class SpendLimitReached(APIError):
    status = 402
    code = "spend_limit_reached"
    message = ("This message could take today's spending past your daily_spend_limit "
               "(charges, open holds and this hold, UTC day).")


class KeySpendLimitReached(SpendLimitReached):
    message = "This call could take the access key past its spend limit for the period."


class TopUpsDisabled(APIError):
    status = 403
    code = "topups_disabled"
    message = "Self-service top-ups are turned off on this service."


class ModelNotAllowed(APIError):
    status = 403
    code = "model_not_allowed"
    message = "This access key may not use this model (see its allowed_models)."


class AdminRequired(APIError):
    status = 403
    code = "admin_required"
    message = "Only an admin may do this (an access key never may)."


class SelfActionForbidden(APIError):
    status = 403
    code = "self_action_forbidden"
    message = "An admin may not act on their own account; ask another admin."


class NotFound(APIError):
    status = 404
    code = "not_found"
    message = "The resource was not found."


class UnknownModel(NotFound):
    code = "model_not_found"
    message = "No active model of the catalog goes by this name, or more than one does (GET /v1/models lists them)."


class SessionGone(NotFound):
    message = ("The session was deleted while its message was being answered: the answer was not saved, "
               "but the provider's work was charged.")


# ----------------------------------------------------------------- 409

class Conflict(APIError):
    status = 409


class EmailTaken(Conflict):
    code = "email_taken"
    message = "That email is already registered."


class UsernameTaken(Conflict):
    code = "username_taken"
    message = "That username is already registered."


class DuplicateKey(Conflict):
    code = "duplicate_key"
    message = "You have already stored this key."


class KeyLimitReached(Conflict):
    code = "key_limit_reached"


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"
    message = "A request with this Idempotency-Key is still running."


class ModelUnavailable(Conflict):
    code = "model_unavailable"
    message = "This session's model is no longer offered."


# ----------------------------------------------------------------- 413, 414, 415, 422, 429

class PayloadTooLarge(APIError):
    status = 413
    code = "payload_too_large"
    message = "The request body is larger than the limit."


class URITooLong(APIError):
    """Answered by gunicorn (gunicorn.conf.py), before any view; declared
    here so that an operation whose query can grow long documents it."""
    status = 414
    code = "uri_too_long"
    message = "The request line is too long."


class UnsupportedMediaType(APIError):
    status = 415
    code = "unsupported_media_type"
    message = "Send the request body as application/json."


class IdempotencyKeyReused(APIError):
    status = 422
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was used with a different request."


class MissingApiKey(APIError):
    status = 422
    code = "missing_api_key"
    message = "Add an API key for this model's provider first (POST /api/v1/keys)."


class RateLimited(APIError):
    status = 429
    code = "rate_limited"
    message = "Too many requests; try again after Retry-After seconds."


class LoginLocked(RateLimited):
    message = "Too many failed logins for this email; try again later."


# ----------------------------------------------------------------- 5xx

class InternalError(APIError):
    status = 500
    code = "internal_error"
    message = "An internal error occurred."


class SettleFailed(InternalError):
    message = "The answer could not be saved; nothing was charged. An operator has been told."


class KeyUnusable(InternalError):
    message = "Your stored key for this provider could not be used; an operator has been told."


class ProviderFailed(APIError):
    status = 502
    code = "provider_error"
    message = "The model's provider answered with an error; nothing was charged."


class ProviderUnreachableError(ProviderFailed):
    def __init__(self, cause, details):
        super().__init__(f"The model's provider could not be reached ({cause}); nothing was charged. "
                         "Try again later.", details)


class ProviderRejected(APIError):
    """A provider's 4xx about the request itself (PROVIDER_REJECTIONS), passed
    on with its status and the provider's own message."""
    message = "The model's provider refused the request; nothing was charged."


# The statuses a provider's refusal of the request keeps, each its own class so that /openapi.json lists it.
PROVIDER_REJECTIONS = {status: type(f"ProviderRejected{status}", (ProviderRejected,),
                                    {"status": status, "code": "provider_rejected_request"})
                       for status in (400, 404, 413, 422)}


class StreamCut(ProviderFailed):
    message = "The provider's stream broke off; what was delivered was billed (and saved)."


class StorageUnavailable(APIError):
    status = 503
    code = "database_unavailable"


class ProvidersUnavailable(APIError):
    status = 503
    code = "providers_unavailable"
    message = ("Every provider that serves this model has been failing; none is tried until its pause is over. "
               "Try again after Retry-After seconds; nothing was charged.")


class ModelUnpriced(APIError):
    status = 503
    code = "model_unpriced"
    message = "This model has no price in force, so it cannot be served; an operator must price it."


class ProviderNotConfigured(APIError):
    status = 503
    code = "provider_not_configured"
    message = "This model's provider is not configured on this service."


class ProviderTimedOut(APIError):
    status = 504
    code = "provider_timeout"
    message = "The model's provider did not answer in time; nothing was charged."


# Werkzeug's own exceptions (routing, body size, the rate limiter, ...) mapped to our codes.
HTTP_CODES = {
    400: "bad_request",
    401: Unauthorized.code,
    403: "forbidden",
    404: NotFound.code,
    405: "method_not_allowed",
    413: PayloadTooLarge.code,
    415: UnsupportedMediaType.code,
    429: RateLimited.code,
}
HTTP_MESSAGES = {
    404: NotFound.message,
    405: "The method is not allowed for this resource.",
    413: PayloadTooLarge.message,
    429: RateLimited.message,
}


def error_response(code, message, status, details=None, headers=None):
    """The error in the shape its caller speaks: ours, or that of a provider
    format the path serves (register_error_shape)."""
    for prefix, shape in current_app.extensions.get("error_shapes", ()):
        if request.path.startswith(prefix):
            return jsonify(shape(code, message, status, details or {})), status, headers or {}
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return jsonify(body), status, headers or {}


def register_error_shape(app, prefix, shape):
    """Errors under `prefix` are rendered by shape(code, message, status,
    details); the longest matching prefix wins."""
    shapes = app.extensions.setdefault("error_shapes", [])
    shapes.append((prefix, shape))
    shapes.sort(key=lambda entry: -len(entry[0]))


def register_error_handlers(app):
    @app.errorhandler(APIError)
    def handle_api_error(error):
        return error_response(error.code, error.message, error.status, error.details, error.headers)

    @app.errorhandler(DatabaseUnavailable)
    def handle_database_unavailable(error):
        return error_response(StorageUnavailable.code, error.message, StorageUnavailable.status)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error):
        headers = {}
        if error.code == 405 and error.valid_methods:
            headers["Allow"] = ", ".join(error.valid_methods)
        return error_response(HTTP_CODES.get(error.code, "http_error"),
                              HTTP_MESSAGES.get(error.code, error.description), error.code, headers=headers)

    @app.errorhandler(Exception)
    def handle_unexpected(error):
        # The traceback travels as a field, not as exc_info, so that no handler
        # formats the exception its own way, driver messages and row values included.
        log.error("unhandled error: %s", describe_error(error),
                  extra={"fields": {"exception": loggable_traceback(error)}})
        return error_response(InternalError.code, InternalError.message, 500)
