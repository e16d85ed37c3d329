# The real sweep on SmolLM2-135M, sized for 2 shared CPU cores (under an hour beside other jobs): 20 trials of
# LoRA/QLoRA on the top layers, 2 workers × 1 thread. A trial trains 120 Spider train rows spread over every
# database for `epochs` of them (4 to 15 optimizer steps, at most 3 minutes) and is judged by its validation loss on
# 60 rows, evaluated every 4 steps (the pruner's reports). No EX per trial (eval_limit = 0): after a few steps of a
# CPU budget every trial's answers were still unusable (the first trials of a 90-second budget: 0 of 16 dev
# questions right), so EX would rank nothing; the pipeline measures EX for the configuration the sweep picks.
# One lower-layer cache serves every trial (the layers under the top 8, rows up to 512 tokens).
study = "sweep_smol"
train_preset = "models/configs/compare_smol.py"
n_trials = 20
workers = 2
eval_limit = 0
prune_startup_trials = 4
random_trials = 8
limit_train = 120
max_steps = 0  # the schedule follows `epochs`
max_minutes = 3.0
eval_interval = 4
warmup_steps = 2
patience = 10
cache_below_top = 8
cache_max_len = 512
lora_r = [4, 8, 16, 32]
lora_alpha = [8, 16, 32, 64]
train_layers = [2, 4, 8]
lr = (1e-4, 3e-3)
batch_tokens = [2048, 4096]
epochs = [0.5, 1.0]
max_len = [384, 512]
precision = ["fp32", "int8", "int4"]
