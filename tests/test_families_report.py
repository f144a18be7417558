"""Family-level claims, the family palette, the collapse line and the console's verdict line, on
fabricated per-seed results (no study runs)."""

from __future__ import annotations

import numpy as np

from contrastlab.report.claim_table import claims_rows
from contrastlab.report.claims import ClaimInputs, ClaimSettings
from contrastlab.report.family_claims import family_runs
from contrastlab.report.palette import FAMILY_SHADES, method_colors, use_families
from contrastlab.report.sections.conclusions import verdict_counts
from contrastlab.report.sections.pretraining import collapse_text

FAMILIES = {"simclr": "contrastive", "supcon": "contrastive", "byol": "non-contrastive", "vicreg": "non-contrastive",
            "supce": "supervised", "random": "baseline"}
TASKS, SEEDS = range(6), range(3)
EPS = np.array([0.0, 4.0, 8.0]) / 255


def fabricated(accuracy: dict[str, float], drop: dict[str, float], noise: float = 0.2, seed: int = 0) -> ClaimInputs:
    rng = np.random.default_rng(seed)
    acc = {(m, t): {s: a + 3 * t + rng.normal(0, noise) for s in SEEDS} for m, a in accuracy.items() for t in TASKS}
    fgsm = {(m, t): {s: (EPS, np.array([0.9, 0.9 - d, 0.9 - 2 * d]) + [0, *rng.normal(0, 0.002, 2)]) for s in SEEDS}
            for m, d in drop.items() for t in TASKS}
    return ClaimInputs(accuracy=acc, robustness=fgsm, families=FAMILIES)


def test_family_value_is_the_mean_of_its_methods_and_the_baseline_is_not_a_family():
    per_run = {"simclr": {0: {0: 1.0}}, "supcon": {0: {0: 3.0}}, "random": {0: {0: 9.0}}, "mystery": {0: {0: 5.0}}}
    assert family_runs(per_run, {**FAMILIES, "mystery": "unknown"}) == {"contrastive": {0: {0: 2.0}}}


def test_family_claims_transfer_as_well_and_robustness():
    inputs = fabricated({"simclr": 80, "supcon": 81, "byol": 80.4, "vicreg": 80.6, "supce": 70, "random": 30},
                        {"simclr": 0.1, "supcon": 0.1, "byol": 0.3, "vicreg": 0.3, "supce": 0.3, "random": 0.1})
    rows = {r["claim"]: r for r in claims_rows(inputs, ClaimSettings(accuracy_margin=1.0, eps_max=8 / 255))}
    assert rows["F1a"]["text"].startswith("non-contrastive pretraining transfers as well as contrastive")
    assert rows["F1a"]["verdict"] == "supported" and rows["F1a"]["test"] == "equivalence"
    assert rows["F1b"]["verdict"] == "contradicted"  # supervised is 10.5 points below contrastive
    assert rows["F4a"]["text"].startswith("contrastive is more robust to FGSM than non-contrastive")
    assert rows["F4a"]["verdict"] == "supported" and rows["F4c"]["verdict"] == "inconclusive"
    assert not any(r["text"].startswith("baseline") or "baseline" in r["statistic"] for r in rows.values())
    assert {"p_adjusted", "seeds_to_decide", "tasks_to_decide"} <= set(rows["F1a"])
    only_two = ClaimInputs(accuracy=inputs.accuracy, families={"simclr": "contrastive", "supce": "supervised"})
    assert [r["claim"] for r in claims_rows(only_two) if r["claim"].startswith("F")] == ["F1a", "F2a", "F3a", "F4a"]


def test_palette_gives_each_family_its_hue_and_externals_free_shades():
    colours = method_colors(["simclr", "supcon", "byol", "supce", "random", "mystery"])
    assert colours["simclr"] in FAMILY_SHADES["contrastive"] and colours["supcon"] in FAMILY_SHADES["contrastive"]
    assert colours["byol"] in FAMILY_SHADES["non-contrastive"] and colours["supce"] in FAMILY_SHADES["supervised"]
    assert colours["random"] in FAMILY_SHADES["baseline"] and colours["mystery"] in FAMILY_SHADES["unknown"]
    assert len(set(colours.values())) == 6
    with use_families({"simclr": "contrastive", "byol-solo": "non-contrastive", "byol": "non-contrastive"}):
        inside = method_colors(["byol-solo", "byol"])
        assert inside["byol-solo"] in FAMILY_SHADES["non-contrastive"] and inside["byol-solo"] != inside["byol"]
        assert method_colors(["byol-solo"]) == {"byol-solo": inside["byol-solo"]}  # the same in every figure
    assert method_colors(["byol-solo"])["byol-solo"] in FAMILY_SHADES["unknown"]  # outside the run: family unknown


def test_collapse_line_names_the_collapsed_runs():
    curves = {"simsiam": {0: [{"projection_std": "0.9"}, {"projection_std": "0.04"}]},
              "simclr": {0: [{"projection_std": "0.95"}, {"projection_std": "0.97"}]}}
    text = collapse_text(curves)
    assert text.startswith("Collapsed") and "simsiam seed 0 (0.04)" in text and "simclr" not in text
    assert collapse_text({"simclr": {0: [{"loss": "1"}]}}) == ""
    assert collapse_text({"simclr": curves["simclr"]}).startswith("No run collapsed")


def test_verdict_counts_line():
    rows = [{"verdict": "supported", "seeds_to_decide": ""}, {"verdict": "inconclusive", "seeds_to_decide": "9"},
            {"verdict": "inconclusive", "seeds_to_decide": "3"}, {"verdict": "inconclusive", "seeds_to_decide": "not decidable at this effect"}]
    assert verdict_counts(rows) == "1 supported, 0 contradicted, 3 inconclusive (seeds to decide: 3–9 for 2; not decidable at this effect: 1)"
    assert verdict_counts(rows[:3]) == "1 supported, 0 contradicted, 2 inconclusive (seeds to decide: 3–9)"
    rows.append({"verdict": "inconclusive", "seeds_to_decide": "not by seeds alone"})
    assert verdict_counts(rows[1:]).endswith("4 inconclusive (seeds to decide: 3–9 for 2; more tasks for 1; not decidable at this effect: 1)")
