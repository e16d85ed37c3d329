"""The result vocabulary: the API response, the log row and the categories the guard and executor use all come from
`app.nl2sql.outcome`, so they cannot drift apart."""

import pytest

from app.api.routes.query import QueryResponse
from app.nl2sql.outcome import PUBLIC_FIELDS, Category, Outcome, Status, log_entry
from app.sql.executor import CATEGORIES


def test_the_api_response_has_exactly_the_public_fields_of_an_outcome():
    assert tuple(QueryResponse.model_fields) == PUBLIC_FIELDS
    assert "generated_sql" not in PUBLIC_FIELDS  # the model's raw text stays in the log


def test_every_executor_category_is_in_the_vocabulary():
    assert set(CATEGORIES) <= {c.value for c in Category}


def test_an_unknown_status_or_category_fails_at_once():
    with pytest.raises(ValueError):
        Outcome("fine", "ok")
    with pytest.raises(ValueError):
        Outcome("ok", "looked_good")


def test_the_log_row_is_derived_from_the_outcome():
    out = Outcome("empty", "empty_result", question="q", sql="SELECT 1", generated_sql="```sql\nSELECT 1\n```")
    entry = log_entry(out, "question")
    assert (entry.status, entry.category, entry.question, entry.sql) == ("empty", "empty_result", "q", "SELECT 1")
    assert entry.model_sql == "SELECT 1"
    assert out.status is Status.EMPTY and not Outcome("error", "no_sql").ran and out.ran
