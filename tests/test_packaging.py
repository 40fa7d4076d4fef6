"""The laptop install: a wheel, no ML framework, the chart inside."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, base_spec

UV = shutil.which("uv", path=str(Path(sys.executable).parent))


@pytest.mark.slow
@pytest.mark.skipif(UV is None, reason="uv is installed by make")
def test_wheel_renders_outside_the_source_tree(tmp_path: Path, write_spec: Any) -> None:
    assert UV is not None
    subprocess.run([UV, "build", "--wheel", "-q", "-o", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("kubetune-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([UV, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                    "-c", str(ROOT / "constraints.txt"), str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    freeze = subprocess.run([UV, "pip", "freeze", "--python", str(venv / "bin" / "python")],
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    installed = {line.split("==")[0].lower() for line in freeze.splitlines()}
    assert not installed & {"torch", "transformers", "datasets", "accelerate", "peft", "wandb"}

    job = write_spec(base_spec())
    proc = subprocess.run([str(venv / "bin" / "kubetune"), "render", str(job)],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(proc.stdout) if d]
    assert kinds == ["NetworkPolicy", "ConfigMap", "Job"]
