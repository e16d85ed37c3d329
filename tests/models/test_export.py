"""Where the export's transient fp32 model goes: memory-backed scratch space only when it has room to spare."""

from models import export


def test_scratch_space_is_used_only_with_room_to_spare(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_mem_available", lambda: 20e9)
    d = export.scratch_dir(1e6, base=tmp_path)
    assert d is not None and d.parent == tmp_path and d.is_dir() and not any(d.iterdir())
    assert export.scratch_dir(1e15, base=tmp_path) is None  # more than the file system holds
    monkeypatch.setattr(export, "_mem_available", lambda: 8e9)
    assert export.scratch_dir(1e6, base=tmp_path) is None  # the export's own process needs the memory
    assert export.scratch_dir(1e6, base=tmp_path / "absent") is None
