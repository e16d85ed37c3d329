# The sweep from the served SmolLM2 (the base with its committed adapter merged, build/merged/smollm2-135m, which
# `python -m models.export --base smollm2-135m --keep` writes): its answers are usable from the first step, so every
# complete trial gets its EX on 40 Spider dev questions (torch fp32, one question at a time) and the Pareto fronts
# are EX against training time and against the latency proxy. From the base weights (sweep_smol.py) a CPU budget
# left every trial's EX at 0. The same search space and budget; 20 trials (~50 minutes on 2 idle cores).
include = "sweep_smol.py"
study = "sweep_smol_served"
base_dir = "build/merged/smollm2-135m"
n_trials = 20
random_trials = 5
prune_startup_trials = 3
eval_limit = 40
