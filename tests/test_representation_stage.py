"""Beyond the paper, end to end: probes along pretraining, CKA between encoders, alignment /
uniformity per encoder in the micro study and its report; any encoder through `contrastlab analyze all`."""

import csv
import hashlib
import json
import re

import numpy as np
import pytest
import torch

from contrastlab.config_checks import load_config
from contrastlab.config_checks import trajectory_epochs
from contrastlab.errors import ConfigError
from contrastlab.study.plan import plan_units
from helpers import MICRO_STUDY, copy_of_shared_study, run_cli
from toolkit_models import TorchvisionResNet18, randomize, solo_learn_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

NEW_KINDS = ("trajectory", "representation", "alignment")


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def micro_config():
    return load_config("quick", MICRO_STUDY)


@pytest.fixture(scope="module")
def finished_study(shared_micro_study, tmp_path_factory):
    """The session's micro study (tests/conftest.py: the same config, one torch thread), this module's own copy."""
    return copy_of_shared_study(shared_micro_study, tmp_path_factory.mktemp("representation") / "run").run_dir


def test_plan_has_the_new_units(micro_config):
    units = [u for u in plan_units(micro_config) if u.kind in NEW_KINDS]
    kinds = [u.kind for u in units]
    # trajectory: 2 methods x 1 seed x 2 tasks; alignment: 3 encoders (random too); representation: 2 tasks
    assert (kinds.count("trajectory"), kinds.count("alignment"), kinds.count("representation")) == (4, 3, 2)
    trajectory = next(u for u in units if u.kind == "trajectory")
    assert [p for r, p in trajectory.inputs if r == "checkpoint"] == [f"pretrain/simclr/seed0/checkpoints/epoch_{e:04d}.safetensors"
                                                                       for e in (0, 1, 2)]
    # the probes it may read instead of fitting: the final encoder's and the random init's, each with the encoder it probed
    reuse = ["finetune/simclr/seed0/task-0-1-2", "finetune/random/seed0/task-0-1-2"]
    # and every unit whose file it reads: the random init's pretraining too (its encoder), in plan order
    assert trajectory.deps == ("pretrain/simclr/seed0", reuse[0], "pretrain/random/seed0", reuse[1])
    assert [p for r, p in trajectory.inputs if r == "finetune"] == [f"{u}/result.json" for u in reuse]
    assert [p for r, p in trajectory.inputs if r == "finetune_encoder"] == [f"pretrain/{m}/seed0/encoder.safetensors" for m in ("simclr", "random")]
    # without the random baseline only the method's own probe; its key follows the probes it may read
    alone = next(u for u in plan_units(load_config("quick", MICRO_STUDY + ["random_init_baseline=false"])) if u.id == trajectory.id)
    assert alone.deps == ("pretrain/simclr/seed0", reuse[0]) and alone.key != trajectory.key
    representation = next(u for u in units if u.kind == "representation")
    assert len(representation.inputs) == 3 and set(representation.deps) == {u.id for u in plan_units(micro_config) if u.kind == "pretrain"}
    off = load_config("quick", MICRO_STUDY + ["analysis.pretraining_trajectory.enabled=false", "analysis.representation.enabled=false"])
    assert not [u for u in plan_units(off) if u.kind in NEW_KINDS]


def test_trajectory_epochs_are_saved_checkpoints():
    quick = load_config("quick", ["seeds=[0]"])
    assert trajectory_epochs(quick) == [0, 6, 12]  # 3 of the 7 saved (every 2 epochs of 12)
    assert trajectory_epochs(load_config("quick", ["analysis.pretraining_trajectory.max_checkpoints=4"])) == [0, 4, 8, 12]
    assert trajectory_epochs(load_config("quick", ["analysis.pretraining_trajectory.max_checkpoints=null"])) == list(range(0, 13, 2))
    assert trajectory_epochs(load_config("quick", ["analysis.pretraining_trajectory.epochs=[2,0]"])) == [0, 2]
    with pytest.raises(ConfigError, match=r"analysis.pretraining_trajectory.epochs: pretraining saves no checkpoint at epoch 3"):
        load_config("quick", ["analysis.pretraining_trajectory.epochs=[3]"])


def test_trajectory_rows_and_their_last_epoch_is_the_probe(finished_study):
    run_dir = finished_study
    for method in ("simclr", "supce"):
        for task in ("task-0-1-2", "task-3-4-5"):
            rows = rows_of(run_dir / f"analysis/trajectory/{method}/seed0/{task}/trajectory.csv")
            assert [int(r["pretrain_epoch"]) for r in rows] == [0, 1, 2]
            assert {r["method"] for r in rows} == {method} and {r["task"] for r in rows} == {task}
            assert all(0 <= float(r[c]) <= 1 for r in rows for c in ("val_accuracy", "knn_accuracy", "t_w"))
            # the last checkpoint holds the final encoder and the probe has the same settings and seed:
            # its numbers are the finetune unit's
            result = json.loads((run_dir / f"finetune/{method}/seed0/{task}/result.json").read_text())
            assert float(rows[-1]["val_accuracy"]) == pytest.approx(result["val_accuracy"], abs=1e-6)
            assert float(rows[-1]["knn_accuracy"]) == pytest.approx(result["knn_accuracy"], abs=1e-6)
            progress = [r for r in rows_of(run_dir / f"analysis/geometry/{task}/progress.csv") if r["method"] == method]
            assert float(rows[-1]["t_w"]) == pytest.approx(float(progress[-1]["t_w"]), abs=1e-5)
        manifest = json.loads((run_dir / f"analysis/trajectory/{method}/seed0/task-0-1-2/done.json").read_text())
        assert manifest["kind"] == "trajectory" and set(manifest["files"]) == {"trajectory.csv", "trajectory.json"}


TRAJECTORY = "analysis/trajectory/simclr/seed0/task-0-1-2"


def trajectory_again(config, run_dir, out, *, reuse=True, checkpoints=None):
    """Run the stage of TRAJECTORY once more into ``out`` (reading ``run_dir``, which stays untouched):
    without its finetune inputs when not ``reuse``; ``checkpoints`` replace its checkpoint inputs."""
    from dataclasses import replace

    from contrastlab.study.context import unit_context
    from contrastlab.study.units import run_stage

    unit = next(u for u in plan_units(config) if u.id == TRAJECTORY)
    inputs = [(r, p) for r, p in unit.inputs if r != "checkpoint" and reuse]
    inputs += [("checkpoint", str(p)) for p in checkpoints] if checkpoints else [(r, p) for r, p in unit.inputs if r == "checkpoint"]
    out.mkdir(parents=True)
    run_stage(unit_context(replace(unit, inputs=tuple(inputs)), config, run_dir, out))
    return rows_of(out / "trajectory.csv"), json.loads((out / "trajectory.json").read_text())


def numbers(rows):
    return [{k: float(v) for k, v in r.items() if k not in ("method", "task", "seconds")} for r in rows]


def test_trajectory_reads_the_finetune_probes_and_they_equal_a_fit(finished_study, micro_config, tmp_path):
    run_dir = finished_study
    reused = json.loads((run_dir / TRAJECTORY / "trajectory.json").read_text())["reused"]
    # epoch 0 is the random init (same seed), epoch 2 the final encoder: only epoch 1 was fitted
    assert [(r["pretrain_epoch"], r["unit"]) for r in reused] == [(0, "finetune/random/seed0/task-0-1-2"),
                                                                    (2, "finetune/simclr/seed0/task-0-1-2")]
    assert [r["unit_key"] for r in reused] == [json.loads((run_dir / r["unit"] / "done.json").read_text())["key"] for r in reused]
    fitted, meta = trajectory_again(micro_config, run_dir, tmp_path / "fitted", reuse=False)
    assert meta["reused"] == []
    got, want = numbers(rows_of(run_dir / TRAJECTORY / "trajectory.csv")), numbers(fitted)
    assert [r.keys() for r in got] == [r.keys() for r in want] and {"knn_accuracy", "t_w"} <= set(got[0])
    for a, b in zip(got, want):
        for column in a:
            assert a[column] == pytest.approx(b[column], abs=1e-12, rel=0), column


def test_trajectory_fits_when_the_checkpoint_is_not_the_probed_encoder(finished_study, micro_config, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    run_dir = finished_study
    checkpoints = sorted((run_dir / "pretrain/simclr/seed0/checkpoints").glob("epoch_*.safetensors"))
    # the last checkpoint with one encoder tensor moved by 1e-6: no longer the final encoder the finetune unit probed
    changed = tmp_path / "checkpoints" / checkpoints[-1].name
    changed.parent.mkdir()
    tensors = load_file(checkpoints[-1])
    name = next(k for k, v in tensors.items() if k.startswith("encoder.") and v.is_floating_point() and v.ndim > 1)
    tensors[name] = tensors[name] + 1e-6
    save_file(tensors, changed)
    shutil.copy(checkpoints[-1].with_suffix(".json"), changed.with_suffix(".json"))
    rows, meta = trajectory_again(micro_config, run_dir, tmp_path / "changed", checkpoints=[*checkpoints[:-1], changed])
    assert [r["pretrain_epoch"] for r in meta["reused"]] == [0]  # the random init still is epoch 0's encoder
    assert [int(r["pretrain_epoch"]) for r in rows] == [0, 1, 2]
    assert float(rows[-1]["t_w"]) != float(rows_of(run_dir / TRAJECTORY / "trajectory.csv")[-1]["t_w"])  # its own probe's
    # other probe settings than the finetune units': nothing is read
    other = load_config("quick", MICRO_STUDY + ["finetune.lr=0.05"])
    _, meta = trajectory_again(other, run_dir, tmp_path / "other")
    assert meta["reused"] == []


def test_cka_matrix_and_alignment(finished_study):
    run_dir = finished_study
    for task in ("task-0-1-2", "task-3-4-5"):
        folder = run_dir / f"analysis/representation/{task}"
        matrix, meta = np.load(folder / "cka.npy"), json.loads((folder / "cka.json").read_text())
        assert meta["names"] == ["simclr/seed0", "supce/seed0", "random/seed0"] and matrix.shape == (3, 3)
        np.testing.assert_allclose(matrix, matrix.T)
        np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
        assert ((matrix >= 0) & (matrix <= 1 + 1e-9)).all() and meta["samples"] == 3 * 8  # the whole train split: fewer than samples=300
    for method in ("simclr", "supce", "random"):
        result = json.loads((run_dir / f"analysis/alignment/{method}/seed0/alignment.json").read_text())
        assert 0 <= result["alignment"] <= 4 and -4 <= result["uniformity"] <= 0 and 1 <= result["effective_rank"] <= result["feature_dim"]
        assert result["pairs"] == min(256, 10 * 16) and result["augmentation"] == "contrastive"


def test_report_has_the_representation_section(finished_study):
    from contrastlab.report.build import build_report

    html = build_report(finished_study).read_text()
    assert "representations" in re.findall(r'<section id="(\w+)">', html)
    tables = finished_study / "report/tables"
    trajectory = rows_of(tables / "pretraining_trajectory.csv")
    assert len(trajectory) == 2 * 1 * 3 * 2  # methods x seeds x pretraining epochs x tasks
    assert list(trajectory[0])[:4] == ["method", "seed", "pretrain_epoch", "task"]
    assert [(r["method"], r["pretrain_epoch"]) for r in trajectory[:3]] == [("simclr", "0"), ("simclr", "1"), ("simclr", "2")]
    cka = rows_of(tables / "cka.csv")
    assert len(cka) == 3 * 9 and {r["task"] for r in cka} == {"mean", "task-0-1-2", "task-3-4-5"}
    assert {r["method"] for r in rows_of(tables / "alignment_uniformity.csv")} == {"simclr", "supce", "random"}
    for name in ("pretraining_trajectory", "cka_mean", "cka_per_task"):
        assert (finished_study / f"report/figures/{name}.png").exists()


# ---------------------------------------------------------------- any encoder


MICRO_ANY = [s for s in MICRO_STUDY if not s.startswith(("model.", "data.tasks"))]


def test_solo_learn_checkpoint_through_the_cli(monkeypatch, capsys, tmp_path):
    source = randomize(TorchvisionResNet18(width=4, cifar_padding=2, num_classes=None), seed=0)
    checkpoint = tmp_path / "solo-simclr.ckpt"
    torch.save(solo_learn_checkpoint(source), checkpoint)
    out = tmp_path / "any"
    sets = [a for s in MICRO_ANY for a in ("--set", s)]
    code, stdout, err = run_cli(monkeypatch, capsys, "analyze", "all", "--encoder", checkpoint, "--task", "0,1,2", "--task", "3,4,5",
                                "--out", out, "--no-progress", *sets)
    assert code == 0, err
    assert "report:" in stdout
    for kind in ("finetune", "analysis/landscape", "analysis/sharpness", "analysis/robustness"):
        manifest = json.loads((out / f"{kind}/solo-learn/task-0-1-2/done.json").read_text())
        assert manifest["method"] == "solo-learn"
        assert manifest["encoder"] == {"source": "solo-learn", "path": str(checkpoint.resolve()), "format": "lightning",
                                       "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    assert (out / "analysis/geometry/task-3-4-5/progress.csv").exists()
    accuracy = rows_of(out / "report/tables/accuracy.csv")
    assert {(r["method"], r["task"]) for r in accuracy} == {("solo-learn", "task-0-1-2"), ("solo-learn", "task-3-4-5")}
    html = (out / "report/report.html").read_text()
    sections = re.findall(r'<section id="(\w+)">', html)
    assert {"accuracy", "landscape", "sharpness", "robustness"} <= set(sections)
    # a rerun finds every unit finished
    code, _, err = run_cli(monkeypatch, capsys, "analyze", "all", "--encoder", checkpoint, "--task", "0,1,2", "--task", "3,4,5",
                           "--out", out, "--no-progress", *sets)
    assert code == 0, err


def tiny_module_encoder() -> torch.nn.Module:
    """A 'module:function' encoder: pixels (B, 3, H, W) -> (B, 6) features, no feature_dim attribute."""
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def test_module_function_encoder_through_the_cli(monkeypatch, capsys, tmp_path):
    out = tmp_path / "module"
    # FGSM in normalized space (the quick preset compares it) runs too: the encoder is normalized with the data's statistics
    extra = ["analysis.landscape.enabled=false", "analysis.sharpness.enabled=false"]
    sets = [a for s in MICRO_ANY + extra for a in ("--set", s)]
    code, _, err = run_cli(monkeypatch, capsys, "analyze", "all", "--encoder", "test_representation_stage:tiny_module_encoder",
                           "--task", "0,1,2", "--out", out, "--no-progress", *sets)
    assert code == 0, err
    manifest = json.loads((out / "analysis/robustness/module/task-0-1-2/done.json").read_text())
    assert manifest["encoder"] == {"source": "module", "path": "test_representation_stage:tiny_module_encoder", "format": "module",
                                   "sha256": None}
    assert (out / "analysis/robustness/module/task-0-1-2/fgsm_normalized.csv").exists()
    assert rows_of(out / "report/tables/accuracy.csv")[0]["method"] == "module"


# ---------------------------------------------------------------- TensorBoard


class RecordingWriter:
    """Stands in for the TensorBoard writer (the package is an optional extra): keeps every scalar."""

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, float(value), int(step)))

    def flush(self):
        pass

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_tensorboard_scalars_of_pretraining_and_probe(monkeypatch, tmp_path):
    from contrastlab.study import curves
    from helpers import micro_config as make_config, run_single_stage

    writers = []
    monkeypatch.setattr(curves, "scalar_writer", lambda log_dir: writers.append(RecordingWriter(log_dir)) or writers[-1])
    config = make_config("log.tensorboard=true")
    pre = run_single_stage(config, "pretrain", tmp_path / "pre", method="simclr")
    run_single_stage(config, "finetune", tmp_path / "probe", inputs={"encoder": pre / "encoder.safetensors"})
    pretrain_writer, probe_writer = writers
    assert pretrain_writer.log_dir == tmp_path / "pre" / "tensorboard" and pretrain_writer.closed and probe_writer.closed
    assert [s for t, _, s in pretrain_writer.scalars if t == "pretrain/loss"] == [1, 2]
    assert {t for t, _, _ in pretrain_writer.scalars} == {"pretrain/loss", "pretrain/lr", "pretrain/images_per_s", "pretrain/seconds", "pretrain/projection_std"}
    val = [(v, s) for t, v, s in probe_writer.scalars if t == "probe/val_accuracy"]
    result = json.loads((tmp_path / "probe" / "result.json").read_text())
    assert [s for _, s in val] == [0, 1, 2, 3] and val[-1][0] == pytest.approx(result["val_accuracy"])
    # off by default: no writer at all
    run_single_stage(make_config(), "finetune", tmp_path / "quiet", inputs={"encoder": pre / "encoder.safetensors"})
    assert len(writers) == 2
