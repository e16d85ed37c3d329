# Specialize the served base on one database's verified pairs (python -m models.specialize; the admin button runs
# SPECIALIZE_PRESET, this file by default). From the committed adapter, a gentle learning rate over a few passes of
# the packed pairs mixed 1:1 with Spider/synthetic replay, then the served-vs-candidate comparison and the publish rule.
base = ""  # BASE_MODEL
holdout_fraction = 0.2
min_pairs = 20
min_holdout = 4
replay_ratio = 1.0
max_len = 2048  # the demo prompt for the 1.5B (few-shot examples, value lists, glossary) is ~1,300 tokens
epochs = 3.0
lr = 2e-4
warmup_steps = 5
batch_tokens = 4096
examples_k = 3
suite_limit = 0  # the whole business suite (100 questions) for both models
publish = "if_better"
