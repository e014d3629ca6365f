"""One exception per HTTP outcome of the inference server other than 200.

Whoever finds the problem raises the matching exception with a message that names the record, the column
and the fix; ``app`` turns every one of them into a response in one place (plain text, or ``{"error": …}``
when the client accepts JSON). A malformed request is always one of the 4xx here, never a 5xx.
"""
from __future__ import annotations


class HTTPProblem(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(HTTPProblem):
    """400: the body, or a record in it, cannot be used."""

    status = 400


class NotAcceptable(HTTPProblem):
    """406: no format the client accepts can be produced."""

    status = 406


class PayloadTooLarge(HTTPProblem):
    """413: the body is over the payload limit."""

    status = 413


class UnsupportedMediaType(HTTPProblem):
    """415: a Content-Type (or charset) the server does not read."""

    status = 415


class NotReady(HTTPProblem):
    """503: the model is not loaded (yet, or at all), or failed to load."""

    status = 503


class NotFound(HTTPProblem):
    """404: no such model (multi-model endpoints: not loaded, or nothing at the URL asked to load)."""

    status = 404


class Conflict(HTTPProblem):
    """409: a model of that name is already loaded (or loading)."""

    status = 409


class InsufficientMemory(HTTPProblem):
    """507: loading the model would exceed the memory budget; SageMaker unloads others and asks again."""

    status = 507
