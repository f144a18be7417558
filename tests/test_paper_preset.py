"""The paper preset end to end on CPU, on generated folders in the official CIFAR layout (sizes shrunk with --set only)."""

import json

import pytest

from contrastlab.data.cifar_format import write_cifar_folders
from contrastlab.rundir import finished_units
from helpers import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow

SHRUNK = [
    "seeds=[0]", "methods=[simclr,supce]", "data.tasks=[[0,1,2,3,4],[95,96,97,98,99]]", "data.image_size=8",
    "model.width=4", "pretrain.epochs=1", "pretrain.batch_size=32", "finetune.epochs=2",
    "analysis.landscape.grid=3", "analysis.landscape.samples=10", "analysis.sharpness.samples=10", "analysis.sharpness.iters=2",
    "analysis.sharpness.trace_samples=3", "analysis.robustness.samples=10", "analysis.robustness.eps_255=[0,4,8]",
    "analysis.robustness.pgd_steps=1",
]


def test_paper_preset_runs_on_cifar_format_folders(tmp_path, monkeypatch, capsys):
    root = write_cifar_folders(tmp_path / "data", cifar10_train_per_class=8, cifar10_test_per_class=2,
                               cifar100_train_per_class=4, cifar100_test_per_class=2)
    out = tmp_path / "run"
    args = ["study", "--preset", "paper", "--out", out, "--no-progress", f"--set=data.root={root}", *[f"--set={o}" for o in SHRUNK]]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    units = finished_units(out)
    assert {u.kind for u in units} == {"pretrain", "finetune", "landscape", "sharpness", "robustness", "geometry",
                                       "trajectory", "representation", "alignment"}
    assert len(units) == 3 + 6 + 3 * 4 + 2 + (4 + 3 + 2)  # + trajectories, alignment per encoder, CKA per task
    for unit in units:
        assert unit.manifest["device"] == "cpu" and unit.manifest["precision"] == "fp32", unit.id
        assert unit.manifest["device_name"] and unit.manifest["files"]
    config = json.loads((out / "study.json").read_text())["config"]
    assert config["data"]["pretrain"] == "cifar10" and config["precision"] == "auto"
    assert (out / "report" / "report.html").exists() and "report:" in stdout

    # Another precision is another configuration: refused in one line, nothing touched.
    code, _, err = run_cli(monkeypatch, capsys, *args, "--set=precision=bf16")
    assert_one_line_error(code, err, "holds a study with another config")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--set=precision=half")
    assert_one_line_error(code, err, "precision must be one of auto, fp32, bf16")
