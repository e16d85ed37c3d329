# The test preset with structured pruning (models.methods.prune): 4 of SmolLM2's 30 layers and a quarter of every
# MLP's channels removed, then the top 2 layers of the pruned model fully fine-tuned (full's rate).
include = "tiny.py"
out_dir = "models/runs/tiny_prune"
method = "prune"
prune_layers = 4
prune_mlp = 0.25
lr = 1e-4
