# Structured pruning of SmolLM2 (models.methods.prune): 6 of its 30 layers (least block influence) and a quarter of
# every MLP's channels removed, then the top 4 layers of the pruned model fully fine-tuned to recover (full's rate
# and schedule). For the pruning / mixed-precision comparison: size, memory and speed against the unpruned model.
base = "smollm2-135m"
out_dir = "models/runs/prune_smol"
method = "prune"
prune_layers = 6
prune_mlp = 0.25
train_layers = 4
lr = 1e-4
warmup_steps = 30
batch_tokens = 4096
epochs = 1.0
eval_interval = 50
limit_val = 200
patience = 4
