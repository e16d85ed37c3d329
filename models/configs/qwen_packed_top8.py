# Qwen2.5-Coder-0.5B: LoRA r=16 on all projections of the top 8 of 24 layers, trained on in-context packed
# sequences (Spider train + synthetic demo pairs, one sequence per chunk of a database's questions, <= 1024 tokens,
# no two questions with the same SQL in one sequence, loss on every SQL turn: 687k tokens in 787 sequences for
# 9,004 examples instead of ~2M unpacked). The 16 frozen lower layers are
# cached once; matmuls in bf16 (AVX512-BF16: ~4x fp32 here), the LoRA weights fp32. One epoch fits one session.
base = "qwen2.5-coder-0.5b"
out_dir = "models/runs/qwen_dedup_top8"  # the run behind models/adapters/qwen-sql
train_files = ["packed.jsonl"]
method = "lora"
train_layers = 8
lora_r = 16
lora_alpha = 32
lora_dropout = 0.05
lr = 3e-4
warmup_steps = 15
batch_tokens = 4096
max_len = 1024
epochs = 1.0
eval_interval = 30
limit_val = 160
patience = 4
autocast = "bf16"
