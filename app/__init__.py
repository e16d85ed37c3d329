"""Querywise: natural-language questions in, guarded SQL and rows out."""
