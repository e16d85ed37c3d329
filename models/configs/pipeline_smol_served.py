# The whole workflow from the served SmolLM2 (build/merged/smollm2-135m: the base with its committed adapter merged,
# which `python -m models.export --base smollm2-135m --keep` writes): the 20-trial sweep that measures EX per trial
# (models/configs/sweep_smol_served.py), then the best trial trained longer, exported int8 over those same merged
# weights and evaluated as served. About 1.5 hours on 2 idle cores, most of it the sweep.
include = "pipeline_smol.py"
name = "smol_served"
sweep = "models/configs/sweep_smol_served.py"
baseline_model_dir = "build/onnx/smollm2-135m/int8"  # the served SmolLM2 itself: what the workflow must beat
