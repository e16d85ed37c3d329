# Seconds on a CPU: the test preset (loss must fall on a handful of examples, checkpoint must round-trip).
base = "smollm2-135m"
out_dir = "models/runs/tiny"
limit_train = 16
limit_val = 8
train_layers = 2
lora_r = 4
lora_alpha = 8
lora_dropout = 0.0
lr = 3e-3
warmup_steps = 0
batch_tokens = 2048
max_steps = 8
eval_interval = 4
log_interval = 2
epochs = 1.0
