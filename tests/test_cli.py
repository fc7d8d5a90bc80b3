"""Every command answers --help; artifacts ls/show render real artifacts; errors are one line."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from vlpipe.stages.cli import app

runner = CliRunner()


def _all_commands(cmd, path=()):
    yield path
    if getattr(cmd, "commands", None):
        for name, sub in cmd.commands.items():
            yield from _all_commands(sub, path + (name,))


def test_every_command_has_help():
    root_cmd = typer.main.get_command(app)
    paths = list(_all_commands(root_cmd))
    assert ("artifacts", "ls") in paths and ("tokenizer", "train") in paths
    for path in paths:
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        assert "Usage" in r.output


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("vlpipe ")


def test_artifacts_ls_and_show(tiny_dataset):
    root = tiny_dataset.path.parents[1]
    r = runner.invoke(app, ["--root", str(root), "artifacts", "ls"])
    assert r.exit_code == 0, r.output
    assert "dataset" in r.output and "tiny" in r.output
    r = runner.invoke(app, ["--root", str(root), "artifacts", "ls", "--json"])
    rows = json.loads(r.output)
    assert rows[0]["rows"] == 12 and rows[0]["kind"] == "dataset"
    r = runner.invoke(app, ["--root", str(root), "artifacts", "show", "tiny"])
    assert r.exit_code == 0, r.output
    assert "12 rows" in r.output and "caption" in r.output and "train=8" in r.output
    assert "image_bytes" in r.output  # binary column summarised by its length


def test_artifacts_show_unknown_is_one_line_error(tmp_path):
    r = runner.invoke(app, ["--root", str(tmp_path), "artifacts", "show", "ghost"])
    assert r.exit_code == 2
    assert "ghost" in r.output and "vlpipe artifacts ls" in r.output
    assert "Traceback" not in r.output


def test_lineage_shown_in_ls(tiny_dataset):
    root = tiny_dataset.path.parents[1]
    r = runner.invoke(app, ["--root", str(root), "tokenizer", "train", "--data", "tiny", "--out", "wp",
                            "--vocab", "100", "--min-frequency", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["--root", str(root), "artifacts", "ls"])
    assert "dataset:tiny" in r.output
    r = runner.invoke(app, ["--root", str(root), "tokenizer", "train", "--data", "tiny", "--out", "wp"])
    assert r.exit_code == 2 and "--overwrite" in r.output
