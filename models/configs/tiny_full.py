# The test preset with full fine-tuning of the top 2 layers (every weight there; a lower rate than LoRA's).
include = "tiny.py"
out_dir = "models/runs/tiny_full"
method = "full"
lr = 1e-4
