"""The command line: help everywhere, and every user error as one line with a non-zero exit."""

import pytest

from helpers import assert_one_line_error, run_cli
from test_data_cifar import make_cifar10


@pytest.mark.parametrize("command", [[], ["study"], ["pretrain"], ["finetune"], ["analyze"], ["analyze", "robustness"], ["report"], ["data"], ["data", "download"]])
def test_help_everywhere(monkeypatch, capsys, command):
    code, out, _ = run_cli(monkeypatch, capsys, *command, "--help")
    assert code == 0 and "Usage" in out


def test_unknown_preset_and_key_and_type(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "study", "--preset", "quik", "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "unknown preset 'quik'; valid: .*quick")
    code, _, err = run_cli(monkeypatch, capsys, "study", "--out", str(tmp_path / "a"), "--set", "pretrain.epoks=3")
    assert_one_line_error(code, err, "unknown config key 'pretrain.epoks'")
    code, _, err = run_cli(monkeypatch, capsys, "pretrain", "--method", "simclr", "--out", str(tmp_path / "b"), "--set", "seeds=abc")
    assert_one_line_error(code, err, "wrong type for config key 'seeds'")
    code, _, err = run_cli(monkeypatch, capsys, "pretrain", "--method", "dino", "--out", str(tmp_path / "b"))
    assert_one_line_error(code, err, "unknown pretraining method 'dino'; valid: barlow_twins, byol, mocov2, simclr, simsiam, supce, supcon, vicreg")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_malformed_yaml(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {width: 8\n")
    code, _, err = run_cli(monkeypatch, capsys, "study", "--preset", str(bad), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "malformed YAML in .*bad.yaml")


def test_dataset_errors(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "data", "info", "imagenet")
    assert_one_line_error(code, err, "unknown dataset 'imagenet'; valid: .*cifar10")
    code, _, err = run_cli(monkeypatch, capsys, "data", "info", "cifar10", "--root", str(tmp_path))
    assert_one_line_error(code, err, f"{tmp_path}.*contrastlab data download cifar10")
    make_cifar10(tmp_path)  # a well-formed archive whose checksum is not the official one
    code, _, err = run_cli(monkeypatch, capsys, "data", "info", "cifar10", "--root", str(tmp_path))
    assert_one_line_error(code, err, "(?i)checksum|md5")
    archive = next(tmp_path.glob("*.tar.gz"))
    archive.write_bytes(archive.read_bytes()[:200])
    code, _, err = run_cli(monkeypatch, capsys, "data", "info", "cifar10", "--root", str(tmp_path))
    assert_one_line_error(code, err, "(?i)checksum|md5|truncated|corrupt")
    assert archive.stat().st_size == 200  # nothing existing overwritten


def test_data_info_on_embedded_data(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "data", "info", "synth10", "--split", "test")
    assert code == 0 and "synth10 [test]: 10000 images of (32, 32, 3) in 10 classes" in out


def test_missing_and_foreign_checkpoints(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "finetune", "--checkpoint", str(tmp_path / "none.safetensors"), "--task", "0,1", "--out", str(tmp_path / "p"))
    assert_one_line_error(code, err, "checkpoint not found")
    code, _, err = run_cli(monkeypatch, capsys, "finetune", "--checkpoint", "x", "--task", "0,zero", "--out", str(tmp_path / "p"))
    assert_one_line_error(code, err, "--task must be comma-separated")
    code, _, err = run_cli(monkeypatch, capsys, "report", str(tmp_path))
    assert_one_line_error(code, err, "holds no study")


def test_study_starts_the_worker_server_before_the_slow_config_checks(monkeypatch, capsys, tmp_path):
    # The checks import torch (~2 s); the fork server's own imports should overlap them, and a
    # malformed config or a launcher without workers should start no server at all.
    from contrastlab import cli, config_checks
    from contrastlab.errors import ConfigError
    from contrastlab.study import runner
    from contrastlab.utils import workers

    events = []
    monkeypatch.setattr(workers, "start_server", lambda: events.append("server"))
    monkeypatch.setattr(cli, "check_config", lambda c: events.append("checks") or config_checks.check_config(c))

    def stop_before_running(*_args, **_kwargs):
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(runner, "run_study", stop_before_running)
    code, _, err = run_cli(monkeypatch, capsys, "study", "--out", tmp_path / "a")
    assert_one_line_error(code, err, "stopped by the test")
    assert events == ["server", "checks"]  # the quick preset's launcher is local
    events.clear()
    code, _, err = run_cli(monkeypatch, capsys, "study", "--out", tmp_path / "a", "--launcher", "sequential")
    assert events == ["checks"]
    events.clear()
    code, _, err = run_cli(monkeypatch, capsys, "study", "--out", tmp_path / "a", "--set", "pretrain.epoks=3")
    assert_one_line_error(code, err, "unknown config key 'pretrain.epoks'")
    assert events == []
