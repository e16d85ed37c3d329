# models.rank's experiment on real data: compare_smol.py's runs (SmolLM2-135M, top 4 of 30 layers, 400 Spider train
# rows, the shared lower-layer cache) with no early stop (patience above any budget): every run of the check trains
# its whole budget.
#   nice -n 5 python -m models.rank models/configs/rank_smollm2.py --steps 40 --check --check-steps 40
include = "compare_smol.py"
out_dir = "build/rank/rank_smollm2/unused"  # models.rank gives every run its own
patience = 1000
