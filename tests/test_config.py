import pytest

from contrastlab.config import PAPER_TASKS, StudyConfig, config_hash, preset_names
from contrastlab.config_checks import load_config
from contrastlab.errors import ConfigError


def test_presets_exist_and_load():
    assert {"quick", "paper", "fmnist-digits"} <= set(preset_names())
    for name in preset_names():
        assert isinstance(load_config(name), StudyConfig)


def test_paper_preset_is_the_design_protocol():
    c = load_config("paper")
    assert (c.data.pretrain, c.data.downstream) == ("cifar10", "cifar100")
    assert c.data.tasks == PAPER_TASKS
    assert c.model.width == 64 and c.pretrain.epochs == 200 and c.finetune.epochs == 30
    assert {m: c.pretrain.lr[m] for m in ("simclr", "supcon", "supce")} == {"simclr": 0.05, "supcon": 0.05, "supce": 0.2}
    assert c.seeds == [0, 10, 20, 30] and c.analysis.landscape.grid == 51
    assert c.pretrain.temperature == {"simclr": 0.07, "supcon": 0.07, "mocov2": 0.2} and c.finetune.weight_decay == 0.0


def test_quick_preset_uses_the_paper_task_lists_on_synth():
    c = load_config("quick")
    assert c.data.downstream == "synth100" and c.data.tasks == PAPER_TASKS


def test_dotted_overrides_are_typed():
    c = load_config("quick", ["pretrain.epochs=5", "seeds=[3]", "data.tasks=[[1,2]]", "pretrain.lr.simclr=0.5", "data.root=/tmp/x"])
    assert c.pretrain.epochs == 5 and c.seeds == [3] and c.data.tasks == [[1, 2]]
    assert c.pretrain.lr["simclr"] == 0.5 and c.data.root == "/tmp/x"
    assert load_config("quick", ["pretrain.temperature.supcon=0.1"]).pretrain.temperature == {"simclr": 0.2, "supcon": 0.1, "mocov2": 0.2}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pretrain.epoch=5"], "unknown config key 'pretrain.epoch'.*valid keys here: epochs"),
        (["nonsense=1"], "unknown config key 'nonsense'"),
        (["pretrain.epochs=five"], "wrong type for config key 'pretrain.epochs'"),
        (["pretrain.epochs"], "must look like key=value"),
        (["methods=[simclr,dino]"], "unknown method 'dino'"),
        (["finetune.mode=half"], "finetune.mode must be"),
        (["pretrain.epochs=0"], "at least 1"),
        (["pretrain.temperature=0.1"], "pretrain.temperature"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("quick", overrides)
    assert "\n" not in str(info.value)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'quik'; valid: .*quick"):
        load_config("quik")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match="malformed YAML in .*bad.yaml at line"):
        load_config(str(bad))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("pretrain:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'pretrain.epochz' in .*wrong.yaml"):
        load_config(str(wrong))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_yaml_file_preset_and_hash(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\npretrain:\n  epochs: 3\n")
    c = load_config(str(path))
    assert c.name == "mine" and c.pretrain.epochs == 3 and c.data.pretrain == "cifar10"
    assert config_hash(c) == config_hash(load_config(str(path)))
    assert config_hash(c) != config_hash(load_config(str(path), ["pretrain.epochs=4"]))
