# Qwen2.5-Coder-0.5B: continues models/adapters/qwen-sql-shared (one epoch of shared-prefix sequences, every answer
# learned as a first turn) on a mixture of both packings: shared-prefix sequences and in-context sequences (later
# questions see earlier question/SQL turns, the way verified examples reach the prompt). The shared adapter was
# better on first questions (Spider dev-972 54.4% vs 52.7% as served) but stopped using verified examples (business
# suite with 3 examples 22% vs 30%); the mixture aims to keep the first and get back the second. Both files' lower-
# layer caches are reused (models.train.CacheSet); ~0.55 of the mixture's 1.3M tokens fits ~45 minutes here.
base = "qwen2.5-coder-0.5b"
out_dir = "models/runs/qwen_mix_top8"
train_files = ["packed_shared.jsonl", "packed.jsonl"]
init_adapter = "models/adapters/qwen-sql-shared"
method = "lora"
train_layers = 8
lora_r = 16
lora_alpha = 32
lora_dropout = 0.05
lr = 2e-4
warmup_steps = 10
batch_tokens = 4096
max_len = 1024
epochs = 0.55
eval_interval = 30
limit_val = 160
patience = 4
autocast = "bf16"
