# The second adapter: the first run (lora_top12, stopped at step 320 = 0.57 epoch with validation loss still
# falling) continued from its last checkpoint (weights, optimizer, data order) to 1.25 epochs of the same mixture,
# with the cosine schedule stretched to the new length. The 18 frozen lower layers' cache is reused.
include = "lora_top12.py"
out_dir = "models/runs/lora_top12_long"
resume_from = "models/runs/lora_top12/last"
epochs = 1.25  # started at 1.5; restarted at step 450 (resume) with 1.25 to fit the session's time on a shared CPU
eval_interval = 50
patience = 4
