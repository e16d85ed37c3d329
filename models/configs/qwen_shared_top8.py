# Qwen2.5-Coder-0.5B: LoRA r=16 on all projections of the top 8 of 24 layers, as qwen_packed_top8 but trained on
# shared-prefix packed sequences (models.data._pack_shared): the schema once per sequence, then one segment per
# question that attends to the schema and itself only, so every answer is learned as a first turn, the way a
# question without verified examples is asked (617k tokens in 674 sequences for 9,004 examples). The 16 frozen
# lower layers are cached once; matmuls in bf16, the LoRA weights fp32. One epoch fits one session. Published as
# models/adapters/qwen-sql-shared (not served: it no longer uses verified examples; models/card.md).
base = "qwen2.5-coder-0.5b"
out_dir = "models/runs/qwen_shared_top8"
train_files = ["packed_shared.jsonl"]
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
