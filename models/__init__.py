"""Querywise's training side: data preparation, fine-tuning, evaluation and export of the NL-to-SQL model."""
