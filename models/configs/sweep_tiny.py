# Seconds per trial on a CPU: the test sweep (the tiny preset, 3 steps a trial, validation at steps 2 and 3).
study = "sweep_tiny"
train_preset = "models/configs/tiny.py"
n_trials = 3
workers = 2
eval_limit = 0
prune_startup_trials = 1
random_trials = 2
limit_train = 12  # of the tests' 16 + 8 rows
limit_val = 6
max_steps = 3
eval_interval = 2
lora_r = [2, 4]
lr = (1e-3, 3e-3)
precision = ["fp32", "int8", "int4"]
