"""Every config in conf/ composes, alone and inside every experiment."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import choice_overrides
from xfer.argv import CONF_DIR, check_choices, config_groups

GROUPS = config_groups()


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("override", choice_overrides())
def test_every_config_composes(override: str):
    cfg = _compose([override])
    OmegaConf.resolve(cfg.source)
    OmegaConf.resolve(cfg.target)
    assert cfg.trunk._target_ and cfg.strategy._target_


@pytest.mark.parametrize("experiment", GROUPS["experiment"])
def test_every_experiment_composes(experiment: str):
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.name == experiment


def test_check_choices_names_bad_value_and_allowed():
    msg = check_choices(["strategy=nope"])
    assert msg is not None and "strategy=nope" in msg and "finetune" in msg
    assert check_choices(["strategy=finetune,scratch", "seed=3"]) is None
    assert "scratchy" in check_choices(["strategy=finetune,scratchy"])
