"""One error base for the platform.

Services raise a subclass of :class:`EnrsError`; one handler (``enrs.kit.http``) renders it as a
FHIR ``OperationOutcome`` under ``/fhir`` and as RFC 9457 ``application/problem+json`` elsewhere.
``issue_code`` is the FHIR ``IssueType`` code used in the OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Mapping


class EnrsError(Exception):
    """An expected failure with an HTTP status and a message safe to show the caller."""

    status: int = 500
    issue_code: str = "exception"
    title: str = "Internal error"

    def __init__(
        self,
        message: str,
        status: int | None = None,
        *,
        issue_code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if issue_code is not None:
            self.issue_code = issue_code
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(EnrsError):
    status = 400
    issue_code = "invalid"
    title = "Bad request"


class Unauthorized(EnrsError):
    """No credentials, or credentials that do not hold (RFC 6750 ``invalid_token``)."""

    status = 401
    issue_code = "login"
    title = "Unauthorized"

    def __init__(self, message: str, *, error: str = "invalid_token") -> None:
        challenge = f'Bearer realm="enrs", error="{error}", error_description="{message}"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(EnrsError):
    status = 403
    issue_code = "forbidden"
    title = "Forbidden"


class NotFound(EnrsError):
    status = 404
    issue_code = "not-found"
    title = "Not found"


class NotAcceptable(EnrsError):
    status = 406
    issue_code = "not-supported"
    title = "Not acceptable"


class Conflict(EnrsError):
    status = 409
    issue_code = "conflict"
    title = "Conflict"


class PreconditionFailed(EnrsError):
    """A change made on a version that is no longer the resource's (``If-Match``)."""

    status = 412
    issue_code = "conflict"
    title = "Precondition failed"


class PayloadTooLarge(EnrsError):
    status = 413
    issue_code = "too-costly"
    title = "Payload too large"


class UnsupportedMediaType(EnrsError):
    status = 415
    issue_code = "not-supported"
    title = "Unsupported media type"


class Unprocessable(EnrsError):
    status = 422
    issue_code = "processing"
    title = "Unprocessable entity"


class ServiceUnavailable(EnrsError):
    status = 503
    issue_code = "transient"
    title = "Service unavailable"
