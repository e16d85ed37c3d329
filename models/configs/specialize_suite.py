# The business-suite measurement (python -m bench.experiments.specialize_suite): the suite's own questions are the
# verified pairs, so there is no separate suite to check (suite = "") and nothing is published. For the 1.5B (no
# adapter): a fresh LoRA on its top 4 layers, the 24 below cached once, matmuls in bf16; replay from the 0.5B's
# packed Spider data (the same Qwen2.5 tokenizer); prompts with the demo glossary and value lists fit in 2048 tokens.
include = "specialize.py"
suite = ""
publish = "never"
max_len = 2048
replay_file = "build/data/qwen2.5-coder-0.5b/packed.jsonl"
lr = 5e-4
epochs = 4.0
warmup_steps = 3
val_pairs = 16
reports_dir = "reports/specialize"
