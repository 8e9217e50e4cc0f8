"""scripts/download_weights.py: the request it builds, and a clear error when the hub is unreachable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import download_weights as dw

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("source", "id_key"), [("modelscope", "model_id"), ("huggingface", "repo_id")])
def test_request_skips_the_original_checkpoint(source, id_key):
    func, kwargs = dw.download_request(source, "~/autodl-tmp/download/sam3")
    assert func.__name__ == "snapshot_download" and func.__module__.startswith(
        source.replace("huggingface", "hugg")
    )
    assert kwargs == {
        id_key: "facebook/sam3",
        "local_dir": str(Path.home() / "autodl-tmp" / "download" / "sam3"),
        "ignore_patterns": ["sam3.pt"],
    }


def test_defaults_are_modelscope_into_the_autodl_folder():
    args = dw.parse_args([])
    assert args.source == "modelscope" and args.model_dir == "~/autodl-tmp/download/sam3"


def test_unreachable_modelscope_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    calls = []

    def unreachable(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("Failed to resolve 'modelscope.cn'")

    monkeypatch.setattr(dw, "download_request", lambda source, d: (unreachable, {"local_dir": d}))
    assert dw.main(dw.parse_args(["--model_dir", str(tmp_path)])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert calls == [{"local_dir": str(tmp_path)}]
    assert len(err) == 1 and "could not download facebook/sam3 from modelscope" in err[0]
    assert "--source huggingface" in err[0]


def test_huggingface_without_network_fails_cleanly(tmp_path):
    """The real huggingface_hub call, with outgoing traffic disabled: exit 2, one line, no traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "download_weights.py"),
            "--source",
            "huggingface",
            "--model_dir",
            str(tmp_path / "sam3"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not download facebook/sam3 from huggingface")
    assert not (tmp_path / "sam3" / "model.safetensors").exists()
