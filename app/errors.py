"""One JSON error path: every failure leaves as
`{"error": {"code", "message", "details"}}` with the right status."""
import logging

from flask import jsonify
from werkzeug.exceptions import HTTPException

from app.observability import describe_error, loggable_traceback
from database.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


class APIError(Exception):
    status = 400
    code = "bad_request"
    message = "The request could not be processed."

    def __init__(self, message=None, details=None, *, code=None, status=None, headers=None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details or {}
        self.code = code or self.code
        self.status = status or self.status
        self.headers = headers or {}


class InvalidJSON(APIError):
    code = "invalid_json"
    message = "The request body is not valid JSON."


class ValidationFailed(APIError):
    code = "validation_error"
    message = "The request has invalid fields."


class Unauthorized(APIError):
    status = 401
    code = "unauthorized"
    message = "Authentication is required."


class InvalidToken(Unauthorized):
    code = "invalid_token"
    message = "The token is invalid or has been revoked."


class TokenExpired(Unauthorized):
    code = "token_expired"
    message = "The token has expired."


class NotFound(APIError):
    status = 404
    code = "not_found"
    message = "The resource was not found."


class Conflict(APIError):
    status = 409
    code = "conflict"


class UnsupportedMediaType(APIError):
    status = 415
    code = "unsupported_media_type"
    message = "Send the request body as application/json."


# Werkzeug's own exceptions (routing, body size, ...) mapped to our codes.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_response(code, message, status, details=None, headers=None):
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return jsonify(body), status, headers or {}


def register_error_handlers(app):
    @app.errorhandler(APIError)
    def handle_api_error(error):
        return error_response(error.code, error.message, error.status, error.details, error.headers)

    @app.errorhandler(DatabaseUnavailable)
    def handle_database_unavailable(error):
        return error_response("database_unavailable", error.message, 503)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error):
        code = HTTP_CODES.get(error.code, "http_error")
        headers = {}
        if error.code == 405 and error.valid_methods:
            headers["Allow"] = ", ".join(error.valid_methods)
        message = {
            404: "The resource was not found.",
            405: "The method is not allowed for this resource.",
            413: "The request body is larger than the limit.",
            429: "Too many requests; try again after Retry-After seconds.",
        }.get(error.code, error.description)
        return error_response(code, message, error.code, headers=headers)

    @app.errorhandler(Exception)
    def handle_unexpected(error):
        # The traceback travels as a field, not as exc_info, so that no handler
        # formats the exception its own way, driver messages and row values included.
        log.error("unhandled error: %s", describe_error(error),
                  extra={"fields": {"exception": loggable_traceback(error)}})
        return error_response("internal_error", "An internal error occurred.", 500)
