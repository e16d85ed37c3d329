"""Questions that ask to change data: Querywise only reads, so these are answered in words, never sent to the model.

Without this, "Delete all customers" went to the model, which wrote some unrelated SELECT, and the answer came back
`ok`: a user could believe the rows were deleted. A question is a write request when it *begins* with an imperative
that changes data (delete, update, insert, drop, …; "add a/new …", "change the …", "set … to …"). Questions about
changes ("how many orders were deleted?", "products added last month") begin otherwise and are answered as usual.
"""

from __future__ import annotations

import re

_WRITE_START = re.compile(
    r"""^\W*(?:please\s+|can\s+you\s+|could\s+you\s+|i\s+want\s+to\s+|let'?s\s+)?
    (?:delete|remove|drop|truncate|update|insert|erase|wipe|purge|destroy|overwrite|alter|rename|modify
      |add\s+(?:a|an|new|another|the|\d+)\b|create\s+(?:a|an|new|the|table|index|view)\b
      |change\s+(?:the|a|an|all|every|each|his|her|their|its)\b|set\s+(?:the|a|an|all|every|each)\b[^?]*\bto\b
      |grant|revoke|merge\s+into|replace\s+(?:the|all|every)\b)\b""",
    re.IGNORECASE | re.VERBOSE,
)

WRITE_MESSAGE = (
    "Querywise only reads data: it cannot delete, change or add rows, and nothing was run. Ask a question about the "
    "data instead (for example, how many rows match)."
)


def asks_to_change_data(question: str) -> bool:
    return bool(_WRITE_START.match(question))
