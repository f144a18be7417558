"""Encoders trained elsewhere as methods of a study: a mapping entry of ``methods`` with one
checkpoint per seed (or one for all); no pretraining unit; everything downstream includes it;
the probe it gets is the one the study fits on the same encoder trained in it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from contrastlab.errors import ConfigError
from contrastlab.study.plan import count_units, encoder_sources, plan_units, study_methods
from contrastlab.study.runner import run_study
from contrastlab.utils.io import read_json
from helpers import micro_config
from toolkit_models import LightlyResNet18, TorchvisionResNet18, lightly_backbone, lightly_checkpoint, randomize, solo_learn_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH = 4  # MICRO_STUDY's model.width; its images are 8x8
NO_ANALYSES = ["analysis.landscape.enabled=false", "analysis.sharpness.enabled=false", "analysis.robustness.enabled=false",
               "analysis.geometry.enabled=false", "analysis.pretraining_trajectory.enabled=false", "analysis.representation.enabled=false"]


def entry(name: str, *checkpoints, family: str = "non-contrastive", **extra) -> str:
    """A ``methods`` entry as a --set value."""
    fields = [f"name: {name}", f"family: {family}", f"checkpoints: [{', '.join(str(c) for c in checkpoints)}]"]
    fields += [f"{k}: {v}" for k, v in extra.items()]
    return "{" + ", ".join(fields) + "}"


def methods(*entries: str) -> str:
    return f"methods=[{', '.join(entries)}]"


@pytest.fixture(scope="module")
def toolkit_checkpoints(tmp_path_factory):
    """A solo-learn CIFAR checkpoint, a torchvision ImageNet-stem state dict and a lightly checkpoint at the study's width."""
    folder = tmp_path_factory.mktemp("toolkits")
    solo = randomize(TorchvisionResNet18(width=WIDTH, cifar_padding=2, num_classes=None), seed=11)
    torch.save(solo_learn_checkpoint(solo), folder / "byol-solo.ckpt")
    imagenet = randomize(TorchvisionResNet18(width=WIDTH), seed=12)
    torch.save(imagenet.state_dict(), folder / "resnet18-imagenet.pth")
    lightly = lightly_backbone(randomize(LightlyResNet18(base=WIDTH), seed=13))
    torch.save(lightly_checkpoint(lightly, 8 * WIDTH), folder / "simclr-lightly.ckpt")
    return folder


def test_entries_are_checked_before_anything_runs(tmp_path, toolkit_checkpoints):
    solo = toolkit_checkpoints / "byol-solo.ckpt"
    cases = {
        "has 2 checkpoints for 1 seeds": methods("simclr", entry("x", solo, solo)),
        "needs a family": methods("{name: x, checkpoints: [a.ckpt]}"),
        "family must be one of": methods(entry("x", solo, family="other")),
        "the name of a built-in method": methods(entry("simclr", solo)),
        "methods repeats a method": methods(entry("x", solo), entry("x", solo)),
        "unknown key 'ckpt'": methods("{name: x, family: contrastive, checkpoints: [a], ckpt: b}"),
        "mean must be 3 numbers": methods(entry("x", solo, mean="[0.5]", std="[0.2]")),
        "give both mean and std": methods(entry("x", solo, mean="[0.5, 0.5, 0.5]")),
        r"methods entry 'x': encoder checkpoint not found: .*absent.ckpt": methods(entry("x", tmp_path / "absent.ckpt")),
    }
    (tmp_path / "notes.ckpt").write_text("not weights")
    cases[r"methods entry 'x': .*notes.ckpt is a text file, not a checkpoint"] = methods(entry("x", tmp_path / "notes.ckpt"))
    for message, override in cases.items():
        with pytest.raises(ConfigError, match=message) as caught:
            micro_config(override)
        assert "\n" not in str(caught.value)
    # incompatible: an RGB checkpoint for grayscale data
    with pytest.raises(ConfigError, match=r"methods entry 'x': .*'conv1.weight' has shape \(4, 3, 3, 3\), expected \(4, 1, 3, 3\)"):
        micro_config(methods(entry("x", solo)), "data.channels=1")
    assert not (tmp_path / "run").exists()


def test_plan_of_an_external_method(tmp_path, toolkit_checkpoints):
    solo = toolkit_checkpoints / "byol-solo.ckpt"
    config = micro_config(methods("simclr", entry("byol-solo", solo)), "seeds=[0,1]")
    units = plan_units(config)
    assert count_units(config) == len(units)  # the unit budget counts what the plan holds
    assert study_methods(config) == ["simclr", "byol-solo", "random"]
    assert [(m, s) for m, s, _ in encoder_sources(config)] == [(m, s) for m in ("simclr", "byol-solo", "random") for s in (0, 1)]
    ours = [u for u in units if u.method == "byol-solo"]
    assert {u.kind for u in ours} == {"finetune", "landscape", "sharpness", "robustness"}  # no pretrain, trajectory, alignment
    fine = next(u for u in ours if u.kind == "finetune")
    assert fine.deps == () and dict(fine.inputs)["encoder"] == str(solo)
    representation = next(u for u in units if u.kind == "representation")
    assert [p for _, p in representation.inputs].count(str(solo)) == 2  # one encoder per seed
    # the key follows the file's content
    before = fine.key
    torch.save({**torch.load(solo, weights_only=True), "epoch": 1000}, solo)
    assert next(u for u in plan_units(config) if u.id == fine.id).key != before
    # one file per seed, in the order of seeds
    torch.save(torch.load(solo, weights_only=True), tmp_path / "seed1.ckpt")
    config = micro_config(methods(entry("byol-solo", solo, tmp_path / "seed1.ckpt")), "seeds=[0,1]")
    assert [p for m, s, p in encoder_sources(config) if m == "byol-solo"] == [str(solo), str(tmp_path / "seed1.ckpt")]


def test_external_checkpoint_gets_the_probe_the_study_fits_on_it(tmp_path):
    # the same encoder, trained in study A and given to study B as an external checkpoint: the same probe, bit for bit
    first = run_study(micro_config("methods=[simclr]", "random_init_baseline=false", *NO_ANALYSES), tmp_path / "a", build_report=False)
    encoder = first.run_dir / "pretrain/simclr/seed0/encoder.safetensors"
    config = micro_config(methods(entry("simclr-elsewhere", encoder, family="contrastive")), "random_init_baseline=false", *NO_ANALYSES)
    second = run_study(config, tmp_path / "b", build_report=False)
    assert not any(u.startswith("pretrain/") for u in second.ran)
    for task in ("task-0-1-2", "task-3-4-5"):
        a, b = first.run_dir / "finetune/simclr/seed0" / task, second.run_dir / "finetune/simclr-elsewhere/seed0" / task
        probe_a, probe_b = load_file(str(a / "probe.safetensors")), load_file(str(b / "probe.safetensors"))
        assert probe_a.keys() == probe_b.keys() and all(torch.equal(probe_a[k], probe_b[k]) for k in probe_a)
        assert np.array_equal(np.load(a / "snapshots.npy"), np.load(b / "snapshots.npy"))
        manifest = read_json(b / "done.json")
        assert manifest["encoder"]["source"] == "contrastlab" and manifest["encoder"]["path"] == str(encoder)
        assert len(manifest["encoder"]["sha256"]) == 64


def test_study_mixing_builtin_and_toolkit_checkpoints_runs_end_to_end(tmp_path, toolkit_checkpoints):
    t = toolkit_checkpoints
    config = micro_config(methods(
        "simclr",
        entry("byol-solo", t / "byol-solo.ckpt", mean="[0.49, 0.48, 0.45]", std="[0.25, 0.24, 0.26]"),
        entry("supce-torchvision", t / "resnet18-imagenet.pth", family="supervised"),
        entry("simclr-lightly", t / "simclr-lightly.ckpt", family="contrastive")))
    summary = run_study(config, tmp_path / "run")
    run = summary.run_dir
    external = {"byol-solo": "solo-learn", "supce-torchvision": "torchvision", "simclr-lightly": "lightly"}
    for name, source in external.items():
        assert not (run / "pretrain" / name).exists()
        for kind in ("finetune", "analysis/landscape", "analysis/sharpness", "analysis/robustness"):
            manifest = read_json(run / kind / name / "seed0/task-0-1-2/done.json")
            assert manifest["encoder"]["source"] == source and manifest["encoder"]["path"].startswith(str(t))
            assert len(manifest["encoder"]["sha256"]) == 64
    probe = read_json(run / "finetune/byol-solo/seed0/task-0-1-2/probe.json")
    assert probe["normalization"]["mean"] == pytest.approx([0.49, 0.48, 0.45])
    assert probe["architecture"]["stem_padding"] == 2
    cka = read_json(run / "analysis/representation/task-0-1-2/cka.json")
    assert {"byol-solo/seed0", "supce-torchvision/seed0", "simclr-lightly/seed0", "simclr/seed0"} <= set(cka["names"])
    accuracy = (run / "report/tables/accuracy.md").read_text()
    html = summary.report.read_text()
    for name in external:
        assert name in accuracy and name in html


def test_bad_entry_through_the_cli_is_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, toolkit_checkpoints):
    from helpers import MICRO_STUDY, assert_one_line_error, run_cli

    solo = toolkit_checkpoints / "byol-solo.ckpt"
    sets = [f"--set={o}" for o in MICRO_STUDY + [methods("simclr", entry("byol-solo", solo, solo, solo)), "seeds=[0,1]"]]
    code, _, err = run_cli(monkeypatch, capsys, "study", "--preset", "quick", "--out", tmp_path / "out", "--no-progress", *sets)
    assert_one_line_error(code, err, r"methods entry 'byol-solo' has 3 checkpoints for 2 seeds \[0, 1\]")
    assert not (tmp_path / "out").exists()


def test_model_stem_imagenet_pretrains_and_is_recorded(tmp_path):
    from helpers import run_single_stage

    with pytest.raises(ConfigError, match="model.stem must be one of cifar, imagenet"):
        micro_config("model.stem=banana")
    with pytest.raises(ConfigError, match="model.stem=imagenet needs model.encoder=resnet18"):
        micro_config("model.stem=imagenet")
    config = micro_config("model.encoder=resnet18", "model.stem=imagenet", "pretrain.epochs=1")
    cifar = micro_config("model.encoder=resnet18", "pretrain.epochs=1")
    assert plan_units(config)[0].key != plan_units(cifar)[0].key
    assert plan_units(micro_config())[0].key == plan_units(micro_config("model.stem=cifar"))[0].key
    out = run_single_stage(config, "pretrain", tmp_path / "pre", method="simclr")
    assert read_json(out / "encoder.json")["architecture"]["stem"] == "imagenet"
