"""The original study's behaviours as switches (preset ``faithful``), and the report's
"what each correction changes", correlations and run-comparison sections."""

import json

import numpy as np
import pytest
import torch

from contrastlab.config import to_dict
from contrastlab.config_checks import load_config
from contrastlab.errors import ConfigError
from contrastlab.models import build_encoder
from contrastlab.models.normalization import ORIGINAL_STD, input_normalization, set_input_normalization
from contrastlab.report.faithfulness import BEHAVIOURS, behaviour_rows, originals_used
from contrastlab.report.side_by_side import Versions, side_by_side_rows
from contrastlab.study.stages.geometry import procrustes_disparity, truth_map
from contrastlab.study.stages.landscape import direction_seed
from contrastlab.study.stages.pretrain import normalized_set
from contrastlab.train.schedule import cosine_lr
from helpers import MICRO_STUDY, blob_imageset, run_cli

SYNTH = ["data.pretrain=synth10", "data.downstream=synth100"]


def test_faithful_preset_switches_every_original_behaviour_on():
    faithful, corrected = load_config("faithful"), load_config("paper")
    rows = {r["key"]: r for r in behaviour_rows(to_dict(faithful))}
    assert all(r["original used"] in ("yes", "same") for r in rows.values())
    assert originals_used(to_dict(corrected)) == []
    assert faithful.precision == "fp32" and faithful.analysis.robustness.space == "normalized"
    assert len(rows) == len(BEHAVIOURS)


def test_original_normalization_needs_three_channels_and_keys_are_validated():
    with pytest.raises(ConfigError, match="3-channel"):
        load_config("fmnist-digits", ["pretrain.normalization=original"])
    for key, bad in (("finetune.normalization", "cifar"), ("pretrain.schedule_end", "late"),
                     ("analysis.landscape.direction_seed", "x"), ("analysis.landscape.ignore", "bn"),
                     ("analysis.landscape.normalization", "unit"), ("analysis.geometry.truth_copies", "two"),
                     ("analysis.sharpness.params", "encoder")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config("quick", [f"{key}={bad}"])


def test_pretrain_normalization_original_keeps_the_mean_and_uses_the_hard_coded_std():
    data = blob_imageset()
    config = load_config("quick", ["pretrain.normalization=original"])
    out = normalized_set(data, config.pretrain)
    assert out.mean == data.mean and out.std == ORIGINAL_STD and out.images is data.images
    assert normalized_set(data, load_config("quick").pretrain) is data


def test_normalization_buffers_are_replaced_in_place():
    encoder = build_encoder("tiny_cnn", width=2, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    x = torch.rand(2, 3, 8, 8)
    before = encoder.eval()(x)
    set_input_normalization(encoder, (0.4, 0.4, 0.4), (0.25, 0.3, 0.35))
    found = input_normalization(encoder)
    assert found["mean"] == pytest.approx([0.4] * 3) and found["std"] == pytest.approx([0.25, 0.3, 0.35])
    assert not torch.allclose(before, encoder(x))
    assert "normalize.mean" in encoder.state_dict()  # still buffers, saved with the weights
    with pytest.raises(ValueError, match="channel"):
        set_input_normalization(encoder, (0.4,), (0.2,))


def test_schedule_end_reaches_eta_min_at_the_last_epoch_only_with_at_min():
    lr = [cosine_lr(e, 30, 0.1, 0.008, reach_min_at_last=True) for e in range(30)]
    short = [cosine_lr(e, 30, 0.1, 0.008) for e in range(30)]
    assert lr[0] == short[0] == pytest.approx(0.1)
    assert lr[-1] == pytest.approx(8e-4) and short[-1] == pytest.approx(1.07e-3, rel=0.01)


def test_truth_copies_shift_the_map_but_not_the_trajectory_distances():
    rng = np.random.default_rng(0)
    points = rng.random((7, 2))
    distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)) ** 2 / 2  # a Euclidean D (squared / 2)
    one, four = truth_map(distances, 1, 2), truth_map(distances, 4, 2)
    assert one.coords.shape == (7, 2) and four.coords.shape == (10, 2)
    assert np.allclose(four.coords[6], four.coords[7:])  # the copies coincide
    # Euclidean input: both maps are the same configuration, only centred elsewhere.
    assert procrustes_disparity(one.coords[:6], four.coords[:6]) < 1e-9
    assert procrustes_disparity(one.coords[:6], rng.random((6, 2))) > 1e-3


def test_per_model_direction_seeds_differ_per_model_and_are_deterministic():
    seeds = {(m, s, tuple(t)): direction_seed(0, "per_model", m, s, t)
             for m in ("simclr", "supce") for s in (0, 10) for t in ([0, 1, 2], [3, 4, 5])}
    assert len(set(seeds.values())) == len(seeds)
    assert direction_seed(0, "per_model", "simclr", 0, [0, 1, 2]) == seeds[("simclr", 0, (0, 1, 2))]
    assert direction_seed(1, "per_model", "simclr", 0, [0, 1, 2]) != seeds[("simclr", 0, (0, 1, 2))]
    assert direction_seed(7, "shared", "simclr", 0, [0, 1, 2]) == direction_seed(7, "shared", "supce", 10, [3]) == 7


def test_side_by_side_pairs_over_tasks():
    a = {("m", "t1"): {0: 1.0, 1: 3.0}, ("m", "t2"): {0: 2.0}}
    b = {("m", "t1"): {0: 0.0, 1: 1.0}, ("m", "t2"): {0: 1.5}, ("n", "t1"): {0: 1.0}}
    shown, raw = side_by_side_rows(a, b, ["m", "n"], ["t1", "t2"], 0.95, Versions("A", "B", ".2f"))
    assert [r["method"] for r in raw] == ["m"] and raw[0]["n"] == 2 and raw[0]["unit"] == "task"
    assert raw[0]["difference"] == pytest.approx(((2.0 - 0.5) + 0.5) / 2)


@pytest.mark.slow
def test_faithful_study_runs_and_its_report_names_every_original_behaviour(tmp_path, monkeypatch, capsys):
    from contrastlab.study.runner import run_study

    overrides = MICRO_STUDY + SYNTH + ["seeds=[0,1]", "data.tasks=[[0,1,2]]", "random_init_baseline=false"]
    run_dir = tmp_path / "faithful"
    # Its report is built once, below, with the comparison section added (report --compare).
    run_study(load_config("faithful", overrides + ["analysis.landscape.compare_seeding=true"]), run_dir, build_report=False)
    # The probe's sidecar records the downstream statistics, and its analyses used them.
    probe = json.loads(next(run_dir.glob("finetune/simclr/seed0/task-0-1-2/probe.json")).read_text())
    assert probe["normalization"]["source"] == "downstream"
    encoder = json.loads((run_dir / "pretrain/simclr/seed0/encoder.json").read_text())
    assert encoder["normalization"]["std"] == list(ORIGINAL_STD)
    assert probe["normalization"]["std"] != list(ORIGINAL_STD)
    sharp = json.loads(next(run_dir.glob("analysis/sharpness/simclr/seed0/task-0-1-2/sharpness.json")).read_text())
    assert sharp["normalization"] == probe["normalization"]
    inpca = json.loads((run_dir / "analysis/geometry/task-0-1-2/inpca.json").read_text())
    assert inpca["truth_points"] == 2 and sum(p["method"] == "truth" for p in inpca["points"]) == 2
    assert (run_dir / "analysis/robustness/simclr/seed0/task-0-1-2/fgsm_pixel.csv").exists()
    surfaces = [json.loads(p.read_text()) for p in run_dir.glob("analysis/landscape/*/seed*/task-0-1-2/surface.json")]
    assert len({s["direction_seed"] for s in surfaces}) == len(surfaces) == 4

    # A corrected run of the same models' protocol, compared from the faithful run's report.
    corrected = tmp_path / "corrected"
    run_study(load_config("paper", overrides + ["analysis.landscape.enabled=false", "analysis.geometry.enabled=false"]),
              corrected, build_report=False)
    code, out, _ = run_cli(monkeypatch, capsys, "report", str(run_dir), "--compare", str(corrected))
    assert code == 0, out

    html = (run_dir / "report/report.html").read_text()
    for behaviour in BEHAVIOURS:
        assert behaviour.key in html
    assert "What each correction changes" in html and "Does flatness explain transfer" in html
    corrections = (run_dir / "report/tables/corrections.csv").read_text()
    for what in ("√p vs raw p", "pixel vs normalized", "filter-normalized vs raw", "shared vs per model"):
        assert what in corrections
    assert (run_dir / "report/tables/correlations.csv").read_text().count("sharpness_top_normalized") == 3
    assert (run_dir / "report/figures/correlations.png").exists()
    assert "Compared with" in html and "pretrain.normalization" in html
    compare = (run_dir / "report/tables/compare.csv").read_text()
    assert "probe_accuracy" in compare and "fgsm_score" in compare
