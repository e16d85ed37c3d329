"""Where the export's transient fp32 model goes (memory-backed scratch space only when it has room to spare), and
which weights an adapter is merged onto."""

import shutil

import pytest

from models import export
from models.bases import BaseModelError


def test_scratch_space_is_used_only_with_room_to_spare(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_mem_available", lambda: 20e9)
    d = export.scratch_dir(1e6, base=tmp_path)
    assert d is not None and d.parent == tmp_path and d.is_dir() and not any(d.iterdir())
    assert export.scratch_dir(1e15, base=tmp_path) is None  # more than the file system holds
    monkeypatch.setattr(export, "_mem_available", lambda: 1.5e9)
    assert export.scratch_dir(1e6, base=tmp_path) is None  # the export's own process needs the memory
    assert export.scratch_dir(1e6, base=tmp_path / "absent") is None


def test_the_large_base_exports_to_disk_when_memory_would_run_short(tmp_path, monkeypatch):
    """As measured on 23 GB: with the model loaded, ~17 GB are available; the 1.5B's 6.8 GB export in memory came
    within 1.3 GB of running out, the 0.5B's 2.8 GB fits with room."""
    monkeypatch.setattr(export, "_mem_available", lambda: 17e9)
    roomy = shutil.disk_usage(tmp_path)._replace(free=24e9)  # a 24 GB /dev/shm
    monkeypatch.setattr(export.shutil, "disk_usage", lambda _path: roomy)
    assert export.scratch_dir(6.8e9, base=tmp_path) is None
    assert export.scratch_dir(2.8e9, base=tmp_path) is not None


def test_an_export_without_room_on_disk_is_refused_with_both_sizes(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(BaseModelError, match=r"needs about .* GB free under .*; .* GB are free"):
        export.check_room(tmp_path, free * 2)
    export.check_room(tmp_path, 1e6)  # room: no error


def test_large_exports_keep_their_tensor_files_while_exporting():
    """optimum gathers a >2 GB export's per-tensor files into one while both copies lie on disk; the export asks it
    not to (`tensor_files_kept`), and afterwards optimum is as it was."""
    import optimum.exporters.onnx.convert as convert_module

    original = convert_module.check_model_uses_external_data
    with export.tensor_files_kept():
        assert convert_module.check_model_uses_external_data(object()) is False
    assert convert_module.check_model_uses_external_data is original


def test_side_files_are_what_the_graph_does_not_read(tmp_path):
    """Configs and tokenizer files are side files; weight files the graph names (an initializer's, a Constant's, a
    subgraph's) are not, whatever they are called."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    def weight(name: str) -> onnx.TensorProto:
        return numpy_helper.from_array(np.ones((4, 4), np.float32), name)

    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=weight("c"))], "branch", [], [])
    then = helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [4, 4])
    branch.output.append(then)
    nodes = [
        helper.make_node("Constant", [], ["k"], value=weight("k")),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 4])],
        initializer=[weight("w")],
    )
    model = helper.make_model(graph)
    convert_model_to_external_data(model, all_tensors_to_one_file=False, size_threshold=0, convert_attribute=True)
    onnx.save(model, str(tmp_path / "model.onnx"))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert {"w", "k", "c"} <= {p.name for p in tmp_path.iterdir()}  # each tensor in a file of its own name
    assert sorted(p.name for p in export.side_files(tmp_path)) == ["config.json", "tokenizer.json"]


def test_an_adapter_trained_over_other_weights_is_merged_onto_them(tmp_path):
    """A run's `base_dir` (a sweep from the served model) is what its adapter is merged onto, and the stamp tells
    the two exports apart; onto the registry base the adapter would lose what those weights add."""
    import torch

    from models.base import load_base, save_tokenizer
    from models.bases import get_base
    from models.export import _stamp, merge

    spec = get_base("smollm2-135m")
    model, tok = load_base(spec)
    with torch.no_grad():
        model.model.norm.weight.mul_(2.0)  # weights of the base that differ from the registry's
    other = tmp_path / "other"
    model.save_pretrained(other, safe_serialization=True)
    save_tokenizer(tok, other)

    merged, _ = merge(spec, None, base_dir=other)
    assert torch.equal(merged.model.norm.weight, model.model.norm.weight)
    registry, _ = merge(spec, None)
    assert torch.equal(registry.model.norm.weight * 2.0, merged.model.norm.weight)
    assert _stamp(spec, None, 8, 32, other) != _stamp(spec, None, 8, 32)
    with pytest.raises(BaseModelError, match="no config.json"):
        merge(spec, None, base_dir=tmp_path / "nowhere")
