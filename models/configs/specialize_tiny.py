# Seconds to minutes on a CPU: the test preset (SmolLM2, a handful of pairs, a few steps, three suite questions).
include = "specialize.py"
base = "smollm2-135m"
min_pairs = 8
min_holdout = 2
holdout_fraction = 0.25
replay_ratio = 0.5
max_len = 768
max_steps = 4
lr = 1e-3
warmup_steps = 0
batch_tokens = 2048
suite_limit = 3
eval_batch_size = 8
reports_dir = ""  # the run directory only: tests leave reports/ alone
