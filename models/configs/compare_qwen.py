# LoRA against QLoRA on the fast tier's base (models.methods.compare --preset): Qwen2.5-Coder-0.5B from the served
# model (its committed adapter merged), the top 2 of 24 layers trained 24 steps of ~1k tokens on 120 Spider train
# rows (~1 epoch), the same steps, data order and 40 validation rows for both; matmuls in bf16 (AVX512-BF16; the
# trained weights fp32). Sized for 2 shared CPU cores: the 22 frozen lower layers run once into the cache, and
# Qwen's 152k-token output layer is most of each step.
base = "qwen2.5-coder-0.5b"
out_dir = "build/methods/compare-qwen-served/runs/lora"
train_files = ["train.jsonl"]
method = "lora"
train_layers = 2
cache_below_top = 2
lora_r = 16
lora_alpha = 32
lora_dropout = 0.05
lr = 5e-4
warmup_steps = 3
batch_tokens = 1024
max_len = 512
max_steps = 24
eval_interval = 8
limit_train = 120
limit_val = 40
patience = 10
autocast = "bf16"
