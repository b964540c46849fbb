"""Errors as RFC 9457 problem details (`application/problem+json`) with stable types.

Problem bodies carry a type, a title, the status and a message written by the
service or the library (which name fields and columns, never values); an
uploaded file's content or a request's fields are never echoed.
"""

from __future__ import annotations

import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cleanroom.errors import (
    CleanroomError,
    InputError,
    KeyMaterialError,
    PolicyError,
    SpecError,
    VerificationError,
)

PROBLEM_BASE = "urn:cleanroom:problem:"
log = logging.getLogger("cleanroom.service")


class Problem(StarletteHTTPException):
    """Raise from an endpoint (or while a body is read) to answer with a problem document."""

    def __init__(self, status: int, kind: str, title: str, detail: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status, detail or title, headers)
        self.status, self.kind, self.title, self.problem_detail = status, kind, title, detail


def not_found(what: str = "resource") -> Problem:
    """The one answer for "absent" and "not yours": callers cannot tell them apart."""
    return Problem(404, "not-found", "Not found", f"no such {what} visible to you")


def problem_response(problem: Problem) -> JSONResponse:
    body = {"type": PROBLEM_BASE + problem.kind, "title": problem.title, "status": problem.status}
    if problem.problem_detail:
        body["detail"] = problem.problem_detail
    return JSONResponse(body, status_code=problem.status, media_type="application/problem+json",
                        headers=problem.headers)


_LIBRARY = [  # most specific first
    (PolicyError, 422, "policy-refused", "Refused by privacy policy"),
    (VerificationError, 422, "verification-failed", "Verification failed"),
    (SpecError, 400, "invalid-spec", "Invalid specification"),
    (InputError, 400, "invalid-input", "Invalid input"),
    (KeyMaterialError, 409, "key-material", "Key material problem"),
    (CleanroomError, 400, "refused", "Request refused"),
]


def from_library(exc: CleanroomError) -> Problem:
    for cls, status, kind, title in _LIBRARY:
        if isinstance(exc, cls):
            return Problem(status, kind, title, str(exc))
    raise AssertionError("unreachable")


def install(app: FastAPI) -> None:
    """Map every error path to a problem document; nothing becomes an HTML page or a traceback."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(CleanroomError)
    async def _library(request: Request, exc: CleanroomError) -> JSONResponse:
        return problem_response(from_library(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # name the fields, never echo their values (FastAPI's default echoes the input)
        fields = sorted({".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body" for e in exc.errors()})
        return problem_response(Problem(400, "invalid-request", "Invalid request",
                                        f"invalid or missing fields: {', '.join(fields)}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, Problem):
            return problem_response(exc)
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = "no such endpoint" if exc.status_code == 404 else None
        return problem_response(Problem(exc.status_code, kind, str(exc.detail), detail))

    @app.exception_handler(sqlite3.OperationalError)
    async def _busy(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        log.warning("database busy: %s", exc)
        return problem_response(Problem(503, "busy", "Service busy", "the database is busy; retry shortly",
                                        headers={"Retry-After": "1"}))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "internal", "Internal error", "the service failed; see its log"))
