"""What Querywise learns about one business: its glossary and its verified question/SQL examples.

Both live in the application database (next to the query log, never in the user's database) and reach the model
only through the prompt: glossary entries with the schema in the first user turn, verified examples as earlier
turns of the same conversation (`app.nl2sql.prompt.build_conversation`).
"""
