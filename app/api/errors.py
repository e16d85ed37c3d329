"""Turning service conditions into HTTP answers: clear messages, Retry-After when shedding, never a stack trace."""

from fastapi import HTTPException

from app.nl2sql.service import Outcome

RETRY_AFTER_S = 2


def queue_full() -> HTTPException:
    return HTTPException(
        503,
        "The model is busy: too many questions are waiting. Retry shortly.",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def raise_for_unavailable(out: Outcome) -> None:
    if out.category == "db_unavailable":
        raise HTTPException(503, out.message or "The database is unavailable.", headers={"Retry-After": "5"})
