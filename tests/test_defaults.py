"""A part's YAML and its class agree: every value conf/trunk, conf/adapter and conf/head set is the
``_target_`` class's own default for that argument, so building a part from Python and from the config
gives the same model."""
from __future__ import annotations

import inspect
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import OmegaConf

from xfer.argv import CONF_DIR, config_groups
from xfer.schema import constructor_params

# group -> the override that chooses one of its configs, and the composed node it lands in
NODES = {"trunk": ("trunk", "trunk"), "adapter": ("adapter@target_adapter", "target_adapter"),
         "head": ("head", "head")}
CASES = [(group, name) for group in NODES for name in config_groups()[group]]


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=overrides)


def _plain(value: Any) -> Any:
    """Tuples as lists, as YAML writes them."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("group,name", CASES, ids=[f"{g}/{n}" for g, n in CASES])
def test_yaml_values_are_the_class_defaults(group: str, name: str):
    key, node = NODES[group]
    part = OmegaConf.to_container(_compose([f"{key}={name}"])[node], resolve=True)
    cls = get_class(part.pop("_target_"))
    params = constructor_params(cls)
    assert params is not None, f"{cls.__name__} takes any keyword: its defaults cannot be compared"
    drift = []
    for arg, value in part.items():
        assert arg in params, f"conf/{group}/{name}.yaml sets {arg}, which {cls.__name__} does not take"
        default = params[arg].default
        ours, theirs = _plain(value), _plain(default)
        if default is inspect.Parameter.empty or ours != theirs or type(ours) is not type(theirs):
            shown = "no default" if default is inspect.Parameter.empty else repr(theirs)
            drift.append(f"{arg}: YAML {value!r}, {cls.__name__} {shown}")
    assert not drift, f"conf/{group}/{name}.yaml differs from its class's defaults: {'; '.join(drift)}"


@pytest.mark.parametrize("override,message", [
    ("trunk.pool=bogus", "trunk.pool=bogus: must be one of avg, max"),
    ("optim.schedule=step", "optim.schedule=step: must be one of cosine, constant, plateau"),
    ("source_stage.optim.schedule=step", "source_stage.optim.schedule=step: must be one of cosine, constant, plateau"),
    ("strategy.bn_policy=bogus", "strategy.bn_policy=bogus: must be one of frozen, train"),
])
def test_the_schema_reads_its_value_lists_from_the_code(override: str, message: str):
    """trunk.pool, optim.schedule and strategy.bn_policy are checked against the Literal aliases of the
    modules that own the lists, not against lists of the schema's own."""
    from typing import get_args

    from xfer.freezing.base import BNPolicy
    from xfer.models.lr_schedule import SCHEDULES, Schedule
    from xfer.models.trunks import POOLS, Pool
    from xfer.schema import PART_RULES, ConfigError, validate

    assert POOLS == get_args(Pool) and SCHEDULES == get_args(Schedule) and get_args(BNPolicy) == ("frozen", "train")
    assert not {"pool", "bn_policy", "schedule"} & set(PART_RULES)
    with pytest.raises(ConfigError) as err:
        validate(_compose([override]))
    assert str(err.value) == message


@pytest.mark.parametrize("base,cls_path", [("text", "xfer.data.TextDataModule"), ("image", "xfer.data.ImageDataModule")])
def test_base_data_yaml_values_are_the_data_module_defaults(base: str, cls_path: str):
    """conf/base/data/<base>.yaml (with common.yaml) against the data module class it names."""
    folder = CONF_DIR / "base" / "data"
    merged = OmegaConf.merge(OmegaConf.load(folder / "common.yaml"), OmegaConf.load(folder / f"{base}.yaml"))
    values = {k: v for k, v in OmegaConf.to_container(merged).items() if k not in ("defaults", "_target_")}
    assert merged._target_ == cls_path
    params = constructor_params(get_class(cls_path))
    assert params is not None
    # a folder under the run's root (read_cache_dir) is the config's to say: a module built in code has none
    under_root = {k for k, v in values.items() if isinstance(v, str) and v.startswith("${paths.")
                  and k in params and params[k].default is None}
    drift = [f"{k}: YAML {v!r}, class {params[k].default!r}" for k, v in values.items()
             if k not in under_root and (k not in params or _plain(params[k].default) != _plain(v))]
    assert not drift, f"conf/base/data/{base}.yaml differs from {cls_path}'s defaults: {'; '.join(drift)}"
