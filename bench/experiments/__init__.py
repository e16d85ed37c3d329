"""One-off studies behind the engine's design, each runnable on its own (`python -m bench.experiments.<name>`) and
writing its report to reports/bench/: quantization variants (`make quant-bench`), ONNX Runtime session settings
(`make session-bench`), the KV cache between decode steps, answers changed by sharing a batch, and the two
that `python -m bench` also runs as stages: where the ONNX time goes (profile_ort) and a decode step's cost by
batch and context (step_cost).
"""
