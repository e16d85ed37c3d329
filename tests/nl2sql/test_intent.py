"""Questions that ask to change data are recognised (and answered in words); questions about changes are not."""

import pytest

from app.nl2sql.intent import asks_to_change_data


@pytest.mark.parametrize(
    "q",
    [
        "Delete all customers",
        "delete the orders from 2023",
        "Please remove customer 42",
        "Can you update the price of product 3 to 10?",
        "Drop the payments table",
        "Truncate orders",
        "Insert a new customer named Ann",
        "Add a new product called Widget",
        "Change the email of customer 7",
        "Set the status of all orders to shipped",
        "  Wipe everything",
        "Create a table of top customers",
    ],
)
def test_write_requests_are_recognised(q):
    assert asks_to_change_data(q)


@pytest.mark.parametrize(
    "q",
    [
        "How many orders were deleted?",
        "Which products were added last month?",
        "Show customers who changed their address",
        "List updates to the price list in 2025",
        "Total revenue by region",
        "Add up the revenue per month",
        "What is the drop in sales between 2024 and 2025?",
        "Set of customers with no orders",
        "Customers created in 2025",
        "Which orders had their status set to shipped?",
    ],
)
def test_questions_about_data_are_not(q):
    assert not asks_to_change_data(q)


@pytest.mark.slow
async def test_a_write_request_is_answered_in_words_without_the_model(client):
    r = await client.post("/query", json={"question": "Delete all customers"})
    d = r.json()
    assert r.status_code == 200 and d["status"] == "refused" and d["category"] == "write_request"
    assert d["sql"] is None and d["rows"] in (None, []) and "only reads" in d["message"]
    dash = (await client.get("/api/dashboard")).json()
    assert dash["requests"] == 1 and dash["success_rate"] == 0
