"""Composition of every option of every group, and the typed schema's checks."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nin_lightning.config import SGDConfig, TrainConfig, known_keys, validate
from nin_lightning.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["dataset", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    conf = validate(cfg)
    assert isinstance(conf, TrainConfig)
    assert conf.model.num_classes == conf.dataset.num_classes


def test_each_group_has_options():
    for group in GROUPS:
        assert options(group), group


def test_design_card_example_composes(compose_cfg):
    conf = validate(compose_cfg("dataset=cifar100", "model.dropout=0.3"))
    assert conf.model.num_classes == 100 and conf.model.dropout == 0.3
    assert conf.model.preset == "cifar" and conf.model.in_channels == 3


def test_class_count_and_preset_follow_dataset(compose_cfg):
    for name, classes, preset in [("digits", 10, "mnist"), ("mnist", 10, "mnist"), ("svhn", 10, "svhn"),
                                  ("cifar10", 10, "cifar"), ("cifar100", 100, "cifar")]:
        conf = validate(compose_cfg(f"dataset={name}"))
        assert (conf.model.num_classes, conf.model.preset) == (classes, preset)


def test_optimizer_node_is_typed_by_its_option(compose_cfg):
    conf = validate(compose_cfg("optimizer=sgd", "optimizer.nesterov=true"))
    assert isinstance(conf.optimizer, SGDConfig) and conf.optimizer.nesterov


@pytest.mark.parametrize(
    ("override", "culprit"),
    [("model.dropout=1.5", "model.dropout"), ("model.width=0", "model.width"), ("optimizer.lr=-0.1", "optimizer.lr"),
     ("dataset.batch_size=0", "dataset.batch_size"), ("trainer.max_epochs=-5", "trainer.max_epochs"),
     ("trainer.devices=0", "trainer.devices"), ("resume=sometimes", "resume")],
)
def test_out_of_range_values_raise_one_line_user_error(compose_cfg, override, culprit):
    with pytest.raises(UserError) as err:
        validate(compose_cfg(override))
    message = str(err.value)
    assert culprit in message and "\n" not in message


def test_top_level_keys(compose_cfg):
    cfg = compose_cfg()
    for key in ("seed", "resume", "ckpt_path", "tags"):
        assert key in cfg
    assert OmegaConf.select(cfg, "dataset.name") == "digits"


def test_known_keys_cover_nested_fields():
    keys = known_keys()
    assert "model.dropout" in keys and "optimizer.momentum" in keys and "scheduler.milestones" in keys
