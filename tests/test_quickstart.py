"""The README's first command, end to end on a tiny made-up set: import → dedup → accept → export → train → evaluate."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from classify import train
from conftest import ROOT, make_imagefolder


@pytest.mark.slow
def test_quickstart_script_runs_the_whole_path(tmp_path):
    source = make_imagefolder(tmp_path / "source", per_class=(10, 3, 0), size=(160, 140))  # import's minimum: 128
    duplicate = source / "train" / "red_soup" / "0.jpg"
    (source / "train" / "red_soup" / "copy.jpg").write_bytes(duplicate.read_bytes())  # dedup must drop it
    env = {**os.environ, "PLATEKIT_WORKSPACE": str(tmp_path / "ws"), "PLATEKIT_EXPORT": str(tmp_path / "export"),
           "PLATEKIT_RUN": str(tmp_path / "run")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart.sh"), str(source), "--no-serve"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "quickstart: done" in done.stdout
    exported = sorted(p.relative_to(tmp_path / "export").parts[0] for p in (tmp_path / "export").rglob("*.jpg"))
    # 40 images in: the byte-identical copy must go (near-identical made-up images may go too).
    assert 30 <= len(exported) <= 39
    assert {"train", "valid", "test"} == set(exported)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["architecture"] == train.CPU_MODEL and config["strategy"] == "all" and config["head"] == "mlp"
    assert metrics["accuracy"] >= 0.6
    assert any(line.startswith("accuracy ") for line in done.stdout.splitlines())  # evaluate's summary line
    assert Path(tmp_path / "ws" / "manifest.sqlite").is_file()
