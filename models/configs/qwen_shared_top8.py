# Qwen2.5-Coder-0.5B: LoRA r=16 on all projections of the top 8 of 24 layers, as qwen_packed_top8 but trained on
# shared-prefix packed sequences (models.data._pack_shared): the schema once per sequence, then one segment per
# question that attends to the schema and itself only, so every answer is learned as a first turn, the way a
# question without verified examples is asked (617k tokens in 674 sequences for 9,004 examples). The 16 frozen
# lower layers are cached once; matmuls in bf16, the LoRA weights fp32. One epoch fits one session. Published as
# models/adapters/qwen-sql-shared (not served: it no longer uses verified examples; models/card.md).
include = "qwen_packed_top8.py"
out_dir = "models/runs/qwen_shared_top8"
train_files = ["packed_shared.jsonl"]
