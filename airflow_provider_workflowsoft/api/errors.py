"""Errors raised by the Workflowsoft client, hook, operators and sensors.

One base class, :class:`WorkflowsoftError`, for everything. Two families under it:

* :class:`WorkflowsoftInputError` - the request can never succeed as given (bad field values, unknown
  labels, a connection that is not set up, a lookup that finds nothing). Operators and sensors turn
  these into "fail the task without retries" at their boundary, in one place
  (:func:`airflow_provider_workflowsoft.operators._base.fails_without_retries`).
* everything else (:class:`WorkflowsoftAPIError` and its transient subclasses) stays retryable, so
  Airflow's task retries can ride out an outage.

Messages name the method, the path and the server's own message; they never carry the API token.
This module imports nothing from Airflow, so the API client and field model load without it.
"""

from __future__ import annotations

from typing import Any


class WorkflowsoftError(Exception):
    """Base class of every error this package raises."""


class WorkflowsoftInputError(WorkflowsoftError, ValueError):
    """The input can never succeed as given; nothing was sent.

    Operators and sensors fail the task without retries on it (see
    :func:`airflow_provider_workflowsoft.operators._base.fails_without_retries`).
    """


class WorkflowsoftConfigError(WorkflowsoftInputError):
    """The Airflow connection (host, token, extras) is missing or malformed."""


class WorkflowsoftValidationError(WorkflowsoftInputError):
    """Field values were refused before sending. ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class WorkflowsoftLookupError(WorkflowsoftInputError):
    """A lookup by name (diagram, integration step, user) found none or more than one match."""

    def __init__(self, message: str, candidates: list[Any] | None = None) -> None:
        super().__init__(message)
        self.candidates = list(candidates or [])


class WorkflowsoftResponseError(WorkflowsoftError):
    """The server answered 2xx with a body this client cannot understand (HTML, truncated JSON...)."""


class WorkflowsoftAPIError(WorkflowsoftError):
    """The server answered with an error status.

    :param status: the HTTP status code
    :param method: the HTTP method of the request
    :param path: the request path (never the query string with secrets; the token is never in it)
    :param server_message: the server's own message, shortened
    """

    def __init__(self, status: int, method: str, path: str, server_message: str = "") -> None:
        self.status = status
        self.method = method
        self.path = path
        self.server_message = server_message
        detail = f": {server_message}" if server_message else ""
        super().__init__(f"Workflowsoft answered {status} to {method} {path}{detail}")


class WorkflowsoftBadRequestError(WorkflowsoftAPIError, WorkflowsoftInputError):  # type: ignore[misc]
    """400/422: the server refused the input. Retrying the same request cannot help."""


class WorkflowsoftAuthError(WorkflowsoftAPIError, WorkflowsoftInputError):  # type: ignore[misc]
    """401/403 that survived one token refresh: the token or the credentials are wrong.

    :param credentials_of: where the refused credentials come from (the client's ``ClientConfig.label``,
        for example ``"the Airflow connection 'workflowsoft_default'"``), said in the message; never a secret
    """

    def __init__(self, status: int, method: str, path: str, server_message: str = "",
                 credentials_of: str = "") -> None:
        super().__init__(status, method, path, server_message)
        self.credentials_of = credentials_of
        if credentials_of:
            self.args = (f"{self.args[0]}. Check the API token (or the administrator login and password) of "
                         f"{credentials_of}",)


class WorkflowsoftNotFoundError(WorkflowsoftAPIError, WorkflowsoftInputError):  # type: ignore[misc]
    """404: the diagram, step, instance or user does not exist."""


class WorkflowsoftConflictError(WorkflowsoftAPIError, WorkflowsoftInputError):  # type: ignore[misc]
    """409: the request conflicts with the state on the server (for example: already completed)."""


class WorkflowsoftTransientError(WorkflowsoftAPIError):
    """429 or 5xx still failing after every retry. Retryable by Airflow."""


class WorkflowsoftConnectionError(WorkflowsoftError):
    """The server could not be reached (refused, DNS, TLS, timeout) after every retry."""

    def __init__(self, method: str, path: str, reason: str, *, sent: bool) -> None:
        self.method = method
        self.path = path
        self.reason = reason
        self.sent = sent
        super().__init__(f"Could not reach Workflowsoft for {method} {path}: {reason}")


class WorkflowsoftUnknownOutcomeError(WorkflowsoftError):
    """A create was sent, but its answer was lost (read timeout, dropped connection, 500/502/504).

    The server may or may not have acted, so it is not resent.
    """

    def __init__(self, method: str, path: str, reason: str) -> None:
        self.method = method
        self.path = path
        self.reason = reason
        super().__init__(
            f"The outcome of {method} {path} is unknown ({reason}): Workflowsoft may have acted on it. "
            "It was not sent again, to avoid creating a duplicate."
        )


def status_error(status: int, method: str, path: str, server_message: str,
                 credentials_of: str = "") -> WorkflowsoftAPIError:
    """Return the error that fits an HTTP error status (``credentials_of``: see :class:`WorkflowsoftAuthError`)."""
    cls: type[WorkflowsoftAPIError]
    if status in (401, 403):
        return WorkflowsoftAuthError(status, method, path, server_message, credentials_of)
    if status == 404:
        cls = WorkflowsoftNotFoundError
    elif status == 409:
        cls = WorkflowsoftConflictError
    elif status == 429 or status >= 500:
        cls = WorkflowsoftTransientError
    elif 400 <= status < 500:
        cls = WorkflowsoftBadRequestError
    else:
        cls = WorkflowsoftAPIError
    return cls(status, method, path, server_message)


__all__ = [
    "WorkflowsoftAPIError",
    "WorkflowsoftAuthError",
    "WorkflowsoftBadRequestError",
    "WorkflowsoftConfigError",
    "WorkflowsoftConflictError",
    "WorkflowsoftConnectionError",
    "WorkflowsoftError",
    "WorkflowsoftInputError",
    "WorkflowsoftLookupError",
    "WorkflowsoftNotFoundError",
    "WorkflowsoftResponseError",
    "WorkflowsoftTransientError",
    "WorkflowsoftUnknownOutcomeError",
    "WorkflowsoftValidationError",
    "status_error",
]
