"""Few-shot turns for the base model, used while no adapter taught it the answer format (none loaded, or a LoRA
patched into a few-shot base: trained with these in its prompts, `models.patch`).

A tiny invented schema (not the demo database and not Spider) so that the examples teach the answer format,
not the answers.
"""

from app.nl2sql.prompt import Example

_SCHEMA = (
    "authors(author_id int PK, name, country)\n"
    "books(book_id int PK, title, author_id int -> authors.author_id, year int, price num)"
)

EXAMPLES = (
    Example(_SCHEMA, "How many books are there?", "SELECT COUNT(*) FROM books"),
    Example(
        _SCHEMA,
        "List the titles of books published after 2000, newest first.",
        "SELECT title FROM books WHERE year > 2000 ORDER BY year DESC",
    ),
    Example(
        _SCHEMA,
        "Average book price per author country",
        "SELECT a.country, AVG(b.price) FROM books AS b JOIN authors AS a ON b.author_id = a.author_id "
        "GROUP BY a.country",
    ),
)
