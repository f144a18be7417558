"""Many tasks and seeds: random task specs, confidence intervals and the claims table of a real (micro) study."""

import csv
import json

import numpy as np
import pytest
from scipy import special as scipy_special
from scipy import stats as scipy_stats

from contrastlab.study.runner import run_study
from helpers import micro_config

pytestmark = pytest.mark.slow


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_random_tasks_with_three_seeds_give_intervals_and_claims(tmp_path):
    # Five tasks: the fewest that get the report's distributions over tasks (more than its four per-task figures).
    config = micro_config("data.tasks=random:5", "data.task_ways=3", "seeds=[0,1,2]", "methods=[simclr,supcon,supce]",
                          "analysis.landscape.enabled=false", "pretrain.temperature.supcon=0.5")
    assert len(config.data.tasks) == 5 and config.data.tasks_spec == "random:5"
    assert len({tuple(t) for t in config.data.tasks}) == 5 and all(len(t) == 3 for t in config.data.tasks)
    run_study(config, tmp_path / "run")
    tables = tmp_path / "run" / "report" / "tables"

    rows = read_rows(tables / "accuracy.csv")
    assert len(rows) == 4 * 5  # three methods and the random baseline, five tasks
    # Three seeds (< 5): the seed-to-seed spread of the logit accuracies pooled over every cell of the
    # table, a t-interval on the logit scale around the cell's mean, back-transformed.
    logits = [scipy_special.logit(np.clip(np.array(json.loads(row["values"])) / 100, 1e-4, 1 - 1e-4)) for row in rows]
    df = sum(len(x) - 1 for x in logits)
    sd = np.sqrt(sum(((x - x.mean()) ** 2).sum() for x in logits) / df)
    for row in rows:
        values = json.loads(row["values"])
        assert int(row["n"]) == 3 and row["interval"] == "pooled" and int(row["df"]) == df
        middle = scipy_special.logit(np.mean(values) / 100)
        half = scipy_stats.t.ppf(0.975, df) * sd / np.sqrt(len(values))
        low, high = 100 * scipy_special.expit(middle - half), 100 * scipy_special.expit(middle + half)
        assert float(row["ci_low"]) == pytest.approx(low, abs=1e-3) and float(row["ci_high"]) == pytest.approx(high, abs=1e-3)

    claims = read_rows(tables / "claims.csv")
    assert len({c["claim"][0] for c in claims}) >= 3
    assert {c["verdict"] for c in claims} <= {"supported", "contradicted", "inconclusive"}
    for column in ("claim", "statistic", "estimate", "ci_low", "ci_high", "verdict"):
        assert column in claims[0]
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "Distributions over 5 tasks" in html and 'id="distributions"' in html
