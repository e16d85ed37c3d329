# The test preset with QLoRA: the top layers' frozen weights held as NF4 (blocks of 64), LoRA on top.
include = "tiny.py"
out_dir = "models/runs/tiny_qlora"
method = "qlora"
qlora_block = 64
