"""study --until-decided: rounds of seeds on the micro study, resumed after an interruption between
rounds, each round in study.json's history and its look in the report; its CLI checks."""

from __future__ import annotations

import pytest

from contrastlab.report.looks import current_look
from contrastlab.rundir import read_study, sequential_rounds as rounds
from contrastlab.study import sequential
from contrastlab.study.sequential import UntilDecided, next_seed, run_until_decided
from helpers import assert_one_line_error, copy_of_shared_study, micro_config, run_cli


def test_next_seed_follows_the_spacing():
    assert next_seed([0, 1]) == 2 and next_seed([0, 10, 20]) == 30 and next_seed([5]) == 6


def test_until_decided_adds_seeds_resumes_after_ctrl_c_and_records_rounds(shared_micro_study, tmp_path, monkeypatch):
    run = tmp_path / "run"
    copy_of_shared_study(shared_micro_study, run)  # seeds [0], finished

    def interrupted(seeds):  # Ctrl-C between the first and the second round
        raise KeyboardInterrupt

    monkeypatch.setattr(sequential, "next_seed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_until_decided(micro_config(), run, UntilDecided(max_seeds=2))
    assert [r["seeds"] for r in rounds(read_study(run))] == [1]
    monkeypatch.undo()

    result = run_until_decided(micro_config(), run, UntilDecided(max_seeds=2))
    assert [r.seeds for r in result.rounds] == [1, 2] and result.stop == "reached --max-seeds 2"
    study = read_study(run)
    assert study["config"]["seeds"] == [0, 1] and [r["seeds"] for r in rounds(study)] == [1, 1, 2]
    assert all("undecided" in r for r in rounds(study))
    look = current_look(study, 2, 0.05)
    assert look.number == 2 and look.alpha == pytest.approx(0.05 - look_spent(0.5))  # looks at 1/2 and 2/2
    assert "look 2 of a sequential study" in (run / "report" / "report.html").read_text()

    again = run_until_decided(micro_config(), run, UntilDecided(max_seeds=2))  # resumed at seeds [0, 1]: nothing new
    assert [r.seeds for r in again.rounds] == [2] and again.study.ran == []


def look_spent(fraction: float) -> float:
    from contrastlab.stats import obrien_fleming_spent

    return obrien_fleming_spent(fraction, 0.05)


def test_cli_options_go_together(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "study", "--out", tmp_path / "r", "--max-seeds", "3")
    assert_one_line_error(code, err, "go with --until-decided")
    code, _, err = run_cli(monkeypatch, capsys, "study", "--out", tmp_path / "r", "--until-decided")
    assert_one_line_error(code, err, "needs --max-seeds")
    code, _, err = run_cli(monkeypatch, capsys, "study", "--out", tmp_path / "r", "--until-decided", "--max-seeds", "1")
    assert_one_line_error(code, err, "below the study's 2 seeds")


def test_a_verdict_an_earlier_look_reached_stands():
    """Error control over the looks counts a false verdict at any look, so a decided claim stays decided."""
    from contrastlab.report.claims import DIRECTIONAL, INCONCLUSIVE, SUPPORTED, Claim, decide_together
    from contrastlab.report.looks import earlier_verdicts

    study = {"history": [{"sequential": {"seeds": 2, "max_seeds": 4, "decided": []}},
                         {"sequential": {"seeds": 3, "max_seeds": 4, "decided": [["3b", "FGSM AUC", SUPPORTED]]}},
                         {"sequential": {"seeds": 4, "max_seeds": 4}}]}  # this look: not yet recorded
    earlier = earlier_verdicts(study, 4)
    assert earlier == (("3b", "FGSM AUC", SUPPORTED, 2, 3),) and earlier_verdicts(study, 3) == ()

    def row(claim: str, p: float) -> Claim:
        return Claim(claim, "text", "FGSM AUC", 0.1, -0.05, 0.25, p, 4, "tasks", INCONCLUSIVE, "rule", "", test=DIRECTIONAL)

    now = decide_together([row("3b", 0.2), row("3a", 0.2)], alpha=0.02, own_alpha=0.05, earlier=earlier)
    assert [r.verdict for r in now] == [SUPPORTED, INCONCLUSIVE]
    assert "supported at look 2 (3 seeds)" in now[0].note and now[0].seeds_to_decide == now[0].tasks_to_decide == ""
    assert [r.verdict for r in decide_together([row("3b", 0.2)], alpha=0.02, own_alpha=0.05)] == [INCONCLUSIVE]
