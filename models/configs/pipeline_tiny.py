# Minutes on a CPU: the whole workflow on the tiny presets, as the test suite runs it (tests/models/test_pipeline.py):
# the first 64 examples of each split tokenized (where its data directory is empty), a 2-trial sweep, 4 steps of
# final training, the int8 export, EX on 2 dev questions with plain greedy decoding.
name = "tiny"
sweep = "models/configs/sweep_tiny.py"
prepare_args = ["--limit=64"]
sweep_overrides = ["--n_trials=2", "--workers=1"]
final = {"max_steps": 4, "eval_interval": 2}
eval_limit = 2
eval_args = []
suite = False
