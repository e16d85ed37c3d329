"""Turning service conditions into HTTP answers: clear messages, Retry-After when shedding, never a stack trace."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from app.nl2sql.batcher import QueueClosed, QueueFull, QueueTimeout
from app.nl2sql.outcome import Outcome

RETRY_AFTER_S = 2  # when nothing better is known
DB_RETRY_AFTER_S = 5


class ErrorBody(BaseModel):
    detail: str


_DESCRIPTIONS = {
    400: "The body could not be read (not UTF-8 text)",
    503: "The model is busy or the database is down: retry after Retry-After seconds",
}

# What the app's RequestValidationError handler (app/main.py) answers: one readable message, then the details.
VALIDATION_ERROR_SCHEMA = {
    "title": "HTTPValidationError",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "The first problem: `<field>: <why>`"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                },
            },
        },
    },
}


def error_responses(*codes: int) -> dict:
    """OpenAPI `responses=` entries for the error answers a route gives: `{"detail": "..."}` bodies."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def queue_full(exc: QueueFull | None = None, retry_after_s: int = RETRY_AFTER_S) -> HTTPException:
    """503 for a request the model queue shed: full, waited too long, or the service is stopping."""
    if isinstance(exc, QueueClosed):
        message = "The service is shutting down. Retry shortly."
    elif isinstance(exc, QueueTimeout):
        message = "The model is busy: the question waited too long for its turn. Retry shortly."
    else:
        message = "The model is busy: too many questions are waiting. Retry shortly."
    return HTTPException(503, message, headers={"Retry-After": str(retry_after_s)})


def raise_for_unavailable(out: Outcome) -> None:
    if out.category == "db_unavailable":
        raise HTTPException(
            503, out.message or "The database is unavailable.", headers={"Retry-After": str(DB_RETRY_AFTER_S)}
        )


def document_validation_errors(app: FastAPI) -> None:
    """Make every 422 in the OpenAPI schema describe the body the app really sends (FastAPI's default says
    `detail` is a list; the app's handler makes it one readable string, with the list under `errors`)."""
    build = app.openapi

    def openapi() -> dict:
        schema = build()  # FastAPI caches it: the change below is made once
        components = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in components:
            components["HTTPValidationError"] = VALIDATION_ERROR_SCHEMA
            components.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
