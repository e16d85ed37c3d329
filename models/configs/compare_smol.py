# The methods side by side on real data (models.methods.compare): SmolLM2-135M from its base weights, the top 4 of
# 30 layers trained 40 steps of ~2k tokens on 400 Spider train rows spread over its databases (~0.8 epoch), the same
# steps, data order and 60 validation rows for every method; the compare script sets each method's own keys (its
# learning rate, pruning amounts) over these. Sized for 2 shared CPU cores (~3 minutes of training a method).
# The cache holds the layers under the top 8 (`cache_below_top`), as the sweep's and the rank check's runs do:
# one lower-layer pass serves them all.
base = "smollm2-135m"
out_dir = "build/methods/compare-smol-base/runs/lora"
train_files = ["train.jsonl"]
method = "lora"
train_layers = 4
cache_below_top = 8
lora_r = 16
lora_alpha = 32
lora_dropout = 0.05
lr = 1e-3
warmup_steps = 5
batch_tokens = 2048
max_len = 512
max_steps = 40
eval_interval = 10
limit_train = 400
limit_val = 60
patience = 10
