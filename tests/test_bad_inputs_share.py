"""Bad input to classify export --format space|web: refused with one line and a non-zero exit, nothing written,
nothing that was there touched."""
from __future__ import annotations

import socket

import pytest

from badinput import assert_refused, run, tree_digest


def export(bundle, fmt, out, *options, env=None):
    # huggingface_hub reads HF_ENDPOINT when it is first imported: a changed endpoint needs a fresh interpreter
    return run("classify", "export", "--model", bundle, "--format", fmt, "--out", out, *options, env=env,
               fresh=env is not None)


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("fmt", ["space", "web"])
def test_out_inside_the_bundle(trained_bundle, fmt):
    before = tree_digest(trained_bundle)
    done = export(trained_bundle, fmt, trained_bundle / "share")
    assert_refused(done, "inside the model bundle")
    assert tree_digest(trained_bundle) == before and not (trained_bundle / "share").exists()


@pytest.mark.parametrize("fmt", ["space", "web"])
def test_out_a_folder_export_did_not_write(trained_bundle, tmp_path, fmt):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    before = tree_digest(tmp_path)
    assert_refused(export(trained_bundle, fmt, out), "did not write", "new or empty folder")
    assert tree_digest(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_out_an_earlier_export_with_a_file_added(trained_bundle, tmp_path):
    out = tmp_path / "space"
    assert export(trained_bundle, "space", out).returncode == 0
    (out / "model" / "mine.txt").write_text("added by hand")
    before = tree_digest(tmp_path)
    assert_refused(export(trained_bundle, "space", out), "did not write")
    assert tree_digest(tmp_path) == before


def test_out_a_file(trained_bundle, tmp_path):
    out = tmp_path / "space.txt"
    out.write_text("a file")
    assert_refused(export(trained_bundle, "space", out), "not a folder")
    assert out.read_text() == "a file" and [p.name for p in tmp_path.iterdir()] == ["space.txt"]


def test_push_with_no_network(trained_bundle, tmp_path):
    """The Space is created before anything is written: offline, the command fails fast and leaves nothing."""
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_TOKEN": "hf_not_a_real_token"}
    done = export(trained_bundle, "space", tmp_path / "space", "--push", "someone/plates", env=env)
    assert_refused(done, "cannot create the space someone/plates", "127.0.0.1")
    assert list(tmp_path.iterdir()) == []


def test_push_with_a_malformed_space_name(trained_bundle, tmp_path):
    assert_refused(export(trained_bundle, "space", tmp_path / "space", "--push", "plates"), "USER/NAME")
    assert list(tmp_path.iterdir()) == []


def test_push_with_the_web_format(trained_bundle, tmp_path):
    assert_refused(export(trained_bundle, "web", tmp_path / "web", "--push", "someone/plates"), "--format space")
    assert list(tmp_path.iterdir()) == []


def test_ort_dir_that_is_not_onnxruntime_web(trained_bundle, tmp_path):
    fake = tmp_path / "dist"
    fake.mkdir()
    (fake / "ort.min.js").write_text("// not it")
    assert_refused(export(trained_bundle, "web", tmp_path / "web", "--ort-dir", fake), "missing", "ort.wasm.min.js")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]


def test_not_a_bundle(tmp_path):
    (tmp_path / "run").mkdir()
    assert_refused(export(tmp_path / "run", "web", tmp_path / "web"), "not a complete model bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
