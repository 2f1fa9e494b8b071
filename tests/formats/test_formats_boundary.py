"""Only chatbot/formats/ reads or writes the on-disk model formats: no other module calls torch.load / torch.save /
fsio.atomic_torch_save, and no other module spells a format string out (it would be writing or checking that format
on its own). Checked on the source (AST), so a call hidden inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

from chatbot.formats import artifact, checkpoint, hf_artifact, roomfile

PKG = Path(__file__).resolve().parents[2] / "chatbot"
FORMAT_STRINGS = {checkpoint.FORMAT, artifact.FORMAT, hf_artifact.HF_ARTIFACT_FORMAT, roomfile.FORMAT,
                  *roomfile.READ_FORMATS}
TORCH_IO = {"load", "save"}
# fsio defines the atomic torch write that formats/ uses; crypto only mentions torch.load in its docs
ALLOWED = {PKG / "fsio.py"}


def _outside_formats() -> list[Path]:
    return [p for p in sorted(PKG.rglob("*.py")) if "formats" not in p.relative_to(PKG).parts and p not in ALLOWED]


def _offences(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr in TORCH_IO and isinstance(func.value, ast.Name)
                    and func.value.id == "torch"):
                out.append(f"torch.{func.attr}() at line {node.lineno}")
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "atomic_torch_save":
                out.append(f"atomic_torch_save() at line {node.lineno}")
        elif isinstance(node, ast.Constant) and node.value in FORMAT_STRINGS:
            out.append(f"format string {node.value!r} at line {node.lineno}")
    return out


def test_only_the_format_modules_touch_the_model_files() -> None:
    found = {str(p.relative_to(PKG)): o for p in _outside_formats() if (o := _offences(p))}
    assert not found, f"read/write these files through chatbot/formats/ instead: {found}"


def test_the_check_sees_what_it_looks_for(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\n"
                     "def f(p):\n"
                     f"    x = {{'format': {checkpoint.FORMAT!r}}}\n"
                     "    atomic_torch_save(x, p)\n"
                     "    return torch.load(p, weights_only=True)\n", encoding="utf-8")
    assert len(_offences(probe)) == 3
