"""Presets and `--key=value` overrides, nanoGPT style: one reader for every script with a block of defaults
(`models.train`, `models.specialize`).

A preset is a small file of assignments (`lr = 3e-4`), read as data, never run: each statement must assign a
literal to a key the script defines. One preset may start from another with `include = "other.py"` (a path next
to the including file): its assignments apply at that line, so a preset that includes first and then assigns
states only what it changes (a continuation run, a test preset) instead of copying the file it varies.
"""

from __future__ import annotations

import ast
from pathlib import Path

INCLUDE = "include"


class PresetError(ValueError):
    """A preset or an override the script cannot take (unknown key, not a literal, a missing file)."""


def config_keys(namespace: dict) -> list[str]:
    """The keys a script's defaults define: its public module globals that hold plain values."""
    return [k for k, v in namespace.items() if not k.startswith("_") and isinstance(v, (int, float, str, list, dict))]


def read_preset(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A preset's assignments in file order, an included file's where the include stands."""
    path = Path(path)
    if path.resolve() in seen:
        raise PresetError(f"{path}: includes itself (through {' → '.join(p.name for p in seen)})")
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except OSError as exc:
        raise PresetError(f"cannot read preset {path}: {exc.strerror}") from None
    except SyntaxError as exc:
        raise PresetError(f"{path}:{exc.lineno}: {exc.msg}") from None
    values: dict = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise PresetError(f"{path}:{node.lineno}: a preset holds only `key = value` assignments")
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise PresetError(f"{path}:{node.lineno}: the value of {node.targets[0].id} is not a literal") from None
        if node.targets[0].id == INCLUDE:
            if not isinstance(value, str):
                raise PresetError(f'{path}:{node.lineno}: include names a preset file, e.g. include = "tiny.py"')
            values |= read_preset(path.parent / value, (*seen, path.resolve()))
        else:
            values[node.targets[0].id] = value
    return values


def override(arg: str) -> dict:
    """`--key=value`: the value literal-evaluated (`--lr=1e-3`, `--train_files=['a.jsonl']`), else a string."""
    key, _, text = arg[2:].partition("=")
    try:
        return {key: ast.literal_eval(text)}
    except (ValueError, SyntaxError):
        return {key: text}


def configure(argv: list[str], namespace: dict, keys: list[str]) -> dict:
    """Apply presets and overrides in command-line order to `namespace` (the script's module globals, as nanoGPT
    does) and return the resulting config."""
    for arg in argv:
        values = override(arg) if arg.startswith("--") else read_preset(Path(arg))
        unknown = [k for k in values if k not in keys]
        if unknown:
            raise PresetError(f"unknown config key: {unknown[0]}" + ("" if arg.startswith("--") else f" (in {arg})"))
        namespace.update(values)
    return {k: namespace[k] for k in keys}
