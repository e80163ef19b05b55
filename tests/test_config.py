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


@pytest.mark.parametrize("value", ["0.1", "0.5", "180", "5000"])
def test_val_size_takes_a_count_or_a_fraction(compose_cfg, value):
    """dataset.val_size=0.1 (10 % of the training images) was refused: the key took whole numbers only."""
    conf = validate(compose_cfg(f"dataset.val_size={value}"))
    assert conf.dataset.val_size == (float(value) if "." in value else int(value))
    assert type(conf.dataset.val_size) is (float if "." in value else int)  # a fraction stays one, a count too


@pytest.mark.parametrize("value", ["1.0", "1.5", "-0.1", "-1", "true", "abc", "5000.0"])
def test_val_size_out_of_range_names_both_forms(compose_cfg, value):
    with pytest.raises(UserError) as err:
        validate(compose_cfg(f"dataset.val_size={value}"))
    message = str(err.value)
    assert message.startswith("dataset.val_size=") and "\n" not in message
    assert "a count" in message and "a fraction" in message, message


# SVHN's files are MD5-checked (data/svhn.py): its splits always have these sizes, so a count is safe there
SVHN_SIZES = {"train": 73_257, "train+extra": 73_257 + 531_131}


@pytest.mark.parametrize("preset", [f"dataset={o}" for o in options("dataset")]
                         + [f"experiment={o}" for o in options("experiment")])
def test_every_preset_leaves_training_the_larger_part_on_any_dataset_size(compose_cfg, preset):
    """fast_mnist (dataset/mnist.yaml's val_size: 5000) on an 8,000-image MNIST trained on 3,000 images and
    validated on 5,000. Presets now give validation a fraction; only SVHN, whose sizes are fixed, keeps a count."""
    from nin_lightning.data.base import val_count

    dataset = validate(compose_cfg(preset)).dataset
    sizes = [SVHN_SIZES[dataset.split]] if dataset.name == "svhn" else [100, 1_437, 8_000, 60_000, 604_388]
    for n in sizes:
        val = val_count(dataset.val_size, n)
        assert val < n - val, (preset, dataset.val_size, n)
    if dataset.name != "svhn":
        assert isinstance(dataset.val_size, float), (preset, dataset.val_size)


# ----------------------------------------------------------------------------------- each default once
def test_no_option_file_repeats_its_schemas_default():
    """Defaults live in the schema dataclasses (config/schema.py); a group's option file holds only what
    differs, so a default changed in the schema is never silently kept in a YAML (issue 23)."""
    import dataclasses

    import yaml

    from nin_lightning.config.store import SCHEMAS

    repeated = []
    for path in sorted(CONF.glob("*/*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        base = next((d for d in values.get("defaults", []) if isinstance(d, str) and d.endswith("_schema")), None)
        schema = SCHEMAS.get((path.parent.name, base))
        if schema is None:  # experiments and sweeps overlay options; trainer=cpu extends trainer=default
            continue
        for f in dataclasses.fields(schema):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            if f.name in values and values[f.name] == default and type(values[f.name]) is type(default):
                repeated.append(f"{path.relative_to(CONF)}: {f.name}: {values[f.name]!r}")
    assert not repeated, repeated


def test_the_model_classes_take_their_defaults_from_the_model_config():
    import dataclasses
    import inspect

    from nin_lightning.config import ModelConfig
    from nin_lightning.models import NiN
    from nin_lightning.module import NET_KEYS, NiNClassifier

    spec = set(NET_KEYS) | {"label_smoothing"}  # the model's keys (channels_last, compile: resolved switches there)
    assert spec <= {f.name for f in dataclasses.fields(ModelConfig)}
    for cls in (NiN, NiNClassifier):
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if name in spec and param.default is not param.empty:
                assert param.default == getattr(ModelConfig, name), (cls.__name__, name, param.default)
        assert inspect.signature(cls.__init__).parameters["preset"].default is inspect.Parameter.empty
