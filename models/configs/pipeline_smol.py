# SmolLM2-135M end to end on this CPU: the 20-trial sweep (models/configs/sweep_smol.py; `make sweep` runs the same
# study, build/sweeps/sweep_smol.db, and the pipeline just reads it once it has all its trials), then the best
# trial's configuration trained for 60 steps on 400 rows without the time budget (the methods comparison's
# lower-layer cache), exported int8 and evaluated as served (schema constraint, 4 execution-guided candidates) on
# 100 dev questions and the business suite. The adapter stays under build/pipeline/smol/adapter (publishing it to
# models/adapters is a person's choice).
name = "smol"
sweep = "models/configs/sweep_smol.py"
final = {"limit_train": 400, "max_steps": 60, "max_minutes": 0.0, "eval_interval": 20, "patience": 4}
eval_limit = 100
suite = True
