# The test preset with BitNet b1.58 on the top 2 layers: ternary weights and 8-bit activations from step 0, the
# latent weights fine-tuned from the base's (quantization-aware training).
include = "tiny.py"
out_dir = "models/runs/tiny_bitnet"
method = "bitnet"
lr = 1e-3
