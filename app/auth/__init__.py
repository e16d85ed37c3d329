"""Access control: API keys (stored hashed), UI sessions, the caller (`Principal`) and per-caller rate limits."""
