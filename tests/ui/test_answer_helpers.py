"""What the result partial is built from, without a browser: readable headers and numbers, plain parse errors,
CSV escaping and formula neutralising, paging and counting SQL, result charts, dashboard buckets, and the progress
board (a key reads and cancels only its own requests)."""

import asyncio
import csv
import io

import anyio
import pytest

from app.nl2sql.progress import ProgressBoard, report
from app.ui.charts import bucket_chart, result_chart
from app.ui.present import PRETTY_MAX_CHARS, cell, columns_of, plain_message, pretty_sql, readable_header
from app.ui.rows import RowsError, count_sql, page_sql, to_csv


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("SUM(o.amount)", "Sum of amount"),
        ("COUNT(*)", "Count"),
        ("COUNT(DISTINCT c.customer_id)", "Number of distinct customer id"),
        ("ROUND(AVG(p.unit_price), 2)", "Average unit price"),
        ("SUM(oi.quantity * oi.unit_price)", "Sum of quantity × unit price"),
        ("segment", "segment"),
        ("strftime('%Y', x)", "strftime('%Y', x)"),  # no better words: the SQL itself
    ],
)
def test_readable_headers(name, label):
    assert readable_header(name) == label


def test_numbers_get_separators_and_fixed_decimals_but_ids_and_years_do_not():
    cols = columns_of(["customer_id", "year", "orders", "revenue", "name"], [[12345, 2025, 12345, 1234.5, "x"]])
    row = [12345, 2025, 12345, 1234.5, "x"]
    assert [cell(v, c) for v, c in zip(row, cols, strict=True)] == ["12345", "2025", "12,345", "1,234.50", "x"]
    assert [c.numeric for c in cols] == [True, True, True, True, False]
    assert cell(None, cols[2]) == ""


def test_a_parse_error_is_one_sentence_with_the_detail_apart():
    sentence, detail = plain_message("syntax_error", "The SQL could not be parsed: Expected ) (line 1, column 9).")
    assert sentence.count(".") == 2 and "Expected" not in sentence and detail.endswith("column 9).")
    assert plain_message("unknown_table", "no such table: x") == ("no such table: x", None)


def test_sql_is_laid_out_unless_it_is_long():
    from app.sql.guard import MAX_SQL_CHARS, guard_sql

    assert pretty_sql("SELECT name FROM customers WHERE id = 1", "sqlite").count("\n") >= 2
    long = "SELECT name FROM customers WHERE customer_id IN (" + ", ".join(map(str, range(3000))) + ")"
    assert len(long) > PRETTY_MAX_CHARS and pretty_sql(long, "sqlite") == long  # as it ran, not 3,000 lines
    assert len(pretty_sql(long, "sqlite")) < MAX_SQL_CHARS  # the editor's text still runs when re-submitted
    guard_sql(pretty_sql(long, "sqlite"), dialect="sqlite", row_limit=200)
    assert pretty_sql("SELECT FROM WHERE (", "sqlite") == "SELECT FROM WHERE ("


def test_csv_quotes_and_neutralises_formulas():
    text = to_csv(["a", "=b"], [["=1+1", 'x,"y"'], ["+1", "-1"], ["@SUM(A1)", "\tx"], [-5, None], ["\rx", "plain"]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [
        ["a", "'=b"],
        ["'=1+1", 'x,"y"'],
        ["'+1", "'-1"],
        ["'@SUM(A1)", "'\tx"],
        ["-5", ""],
        ["'\rx", "plain"],
    ]
    assert text.endswith("\r\n")


def test_paging_and_counting_move_only_the_outer_limit():
    assert (
        page_sql("SELECT a FROM t ORDER BY a LIMIT 200", "sqlite", 2, 200)
        == "SELECT a FROM t ORDER BY a LIMIT 200 OFFSET 400"
    )
    assert count_sql("SELECT a FROM t ORDER BY a LIMIT 200 OFFSET 5", "postgres") == (
        "SELECT COUNT(*) AS n FROM (SELECT a FROM t ORDER BY a) AS q",
        5,
    )
    with pytest.raises(RowsError):
        page_sql("SELECT 1; SELECT 2", "sqlite", 1, 10)


def test_time_series_open_as_a_line_in_time_order_and_categories_as_bars():
    months = result_chart(["month", "n"], [["2025-03", 3], ["2025-01", 1], ["2025-02", 2]])
    assert months["kind"] == "line" and (months["line"]["first"], months["line"]["last"]) == ("2025-01", "2025-03")
    assert [y for _, y in months["line"]["points"]] == sorted((y for _, y in months["line"]["points"]), reverse=True)
    assert result_chart(["segment", "n"], [["retail", 3], ["smb", 1]])["kind"] == "bar"
    assert result_chart(["n"], [[1], [2]]) is None


def test_bucket_chart_keeps_every_bucket_of_the_window():
    series = [
        {"start": f"2025-01-01T{h:02d}:00+00:00", "requests": h % 2, "x": 1.0 if h % 2 else None} for h in range(24)
    ]
    chart = bucket_chart(series, "x", top=1.0)
    assert len(chart["bars"]) == 24 and [b["h"] > 0 for b in chart["bars"]] == [bool(h % 2) for h in range(24)]
    assert chart["bars"][0]["x"] < chart["bars"][23]["x"] and chart["ticks"] == [
        "01-01 00:00",
        "01-01 12:00",
        "01-01 23:00",
    ]


def test_progress_is_per_key_and_cancel_stops_the_work():
    async def main():
        board = ProgressBoard()
        seen = {}
        reported = asyncio.Event()

        async def question():
            with board.track("key:alice", "rid-12345678") as progress:
                report("candidates", 2, 4)
                seen["during"] = board.get("key:alice", "rid-12345678").as_dict()
                reported.set()
                await asyncio.sleep(60)  # a long decode: the behaviour under test is that cancel cuts it short
                seen["finished"] = True
            return progress

        task = asyncio.ensure_future(question())
        await reported.wait()  # the question is tracked and decoding
        assert board.get("key:bob", "rid-12345678") is None and not board.cancel("key:bob", "rid-12345678")
        assert board.cancel("key:alice", "rid-12345678")
        progress = await task
        assert progress.cancelled and "finished" not in seen
        assert seen["during"]["stage"] == "candidates" and (
            seen["during"]["candidate"],
            seen["during"]["candidates"],
        ) == (2, 4)
        assert board.get("key:alice", "rid-12345678") is None  # gone once the request ends
        with board.track("key:alice", "bad id!") as untracked:  # an invalid id runs untracked
            assert board.get("key:alice", "bad id!") is None and not untracked.cancelled

    anyio.run(main)
