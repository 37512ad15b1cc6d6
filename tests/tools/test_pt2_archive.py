"""A ``.pt2`` file is data: one that would run code when ``torch.export.load`` reads it is refused by
``serve --model`` before it is loaded (docs/security.md, "Exported models")."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_lightning.tools.pt2_archive import UnsafeArchive, check_pt2_archive

from helpers.inprocess import run_main

MARKER = Path("/tmp") / f"pt2-archive-test-{os.getpid()}"


class RunsCode:
    """Unpickling it would create MARKER."""

    def __reduce__(self):
        return (open, (str(MARKER), "w"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint, tiny_data) -> Path:
    output = tmp_path_factory.mktemp("pt2") / "model.pt2"
    status, stdout, stderr = run_main(
        "export",
        "--ckpt_path",
        tiny_checkpoint,
        "--output",
        output,
        "--data.data_dir",
        tiny_data,
        cwd=output.parent,
    )
    assert status == 0, stderr[-3000:]
    return output


def rewritten(source: Path, target: Path, change) -> Path:
    """A copy of the archive ``source`` with ``change(name, data) -> data`` applied to each member."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for member in original.infolist():
            copy.writestr(member, change(member.filename, original.read(member)))
    return target


def pickled(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def code_in_the_sample_inputs(name: str, data: bytes) -> bytes:
    return pickled(RunsCode()) if "sample_inputs" in name else data


def a_weight_marked_pickled(name: str, data: bytes) -> bytes:
    if name.endswith("_weights_config.json"):
        config = json.loads(data)
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        return json.dumps(config).encode()
    if name.endswith("weights/weight_0"):
        return pickled(RunsCode())
    return data


@pytest.mark.parametrize("change", [code_in_the_sample_inputs, a_weight_marked_pickled])
def test_serve_refuses_a_pt2_that_would_run_code_and_runs_none(tmp_path, exported, change):
    evil = rewritten(exported, tmp_path / "evil.pt2", change)
    MARKER.unlink(missing_ok=True)
    status, stdout, stderr = run_main("serve", "--model", evil, "--port", "8941", cwd=tmp_path)
    assert status == 2, stderr[-3000:]
    assert stderr.startswith(f"error: --model '{evil}' cannot be loaded: it holds ")
    assert "Traceback" not in stderr and "weights_only` set to `False" not in stderr
    assert not MARKER.exists()


def test_an_exported_pt2_passes_the_check(exported):
    check_pt2_archive(exported)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.data())
def test_any_damage_to_an_archive_passes_the_check_or_is_one_refusal(exported, data):
    original = exported.read_bytes()
    with zipfile.ZipFile(exported) as archive:  # the members the check reads, and the directory at the end
        read = [m.header_offset for m in archive.infolist() if m.filename.endswith((".json", ".pt"))]
    near = st.sampled_from(read).flatmap(lambda offset: st.integers(offset, offset + 400))
    start = min(data.draw(near | st.integers(len(original) - 2000, len(original) - 1)), len(original) - 1)
    patch = data.draw(st.binary(min_size=1, max_size=64))
    damaged = original[:start] + patch + original[start + len(patch) :]
    path = exported.with_name("damaged.pt2")
    path.write_bytes(damaged)
    try:
        check_pt2_archive(path)
    except UnsafeArchive as err:
        assert str(err) and "\n" not in str(err)
    assert not MARKER.exists()
