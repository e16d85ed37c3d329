# Baseline: full fine-tuning of every weight of the top 12 layers (same data and schedule as lora_top12).
base = "smollm2-135m"
out_dir = "models/runs/full_top12"
method = "full"
train_layers = 12
lr = 1e-4
warmup_steps = 30
batch_tokens = 4096
epochs = 1.0
eval_interval = 50
limit_val = 200
patience = 4
