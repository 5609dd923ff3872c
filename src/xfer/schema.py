"""Validation of the composed config, before anything trains.

``validate(cfg)`` walks the config with an explicit schema and raises ``ConfigError`` for the first
problem, as one line that names the key, the value and what is allowed::

    optim.lr=-1: must be a number > 0
    trainer.max_epochs=abc: must be an integer >= 1
    target.fraction=0: must be a number with 0 < fraction <= 1
    optim.lrr is not a known key (did you mean optim.lr?); allowed: betas, fused, label_smoothing, lr, ...

What is checked where:

* our own groups (top level, ``source_stage``, ``optim``, ``callbacks``, ``paths``): every key is
  known, with a type and a range;
* ``trainer``: the keys are ``pytorch_lightning.Trainer``'s arguments (less the three xfer passes
  itself); the usual ones have types and ranges; a ``plugins`` entry that is a ``_target_`` node is
  checked as a part (below);
* ``trunk``, ``source_adapter``, ``target_adapter``, ``head``, ``strategy``: the keys are the
  arguments of the ``_target_`` class; a value's type follows the argument's default (an int default
  wants an integer, a float a number, ...), an argument annotated with a ``Literal`` alias takes its values
  (``trunk.pool``, ``strategy.bn_policy``: the lists live in the code that owns them), and common settings
  have ranges (``dropout`` in [0, 1), widths >= 1); strategies check their own ranges against the trunk (``strategy.k``) right after;
* ``source``, ``target``: the data module's keys are the arguments of its class (fractions, batch
  sizes, ...), with ranges; ``<group>.reader.*`` are the arguments of the reader function it names;
* ``callbacks``: each entry null or a part (a class, or a function that builds callbacks).

Values are checked after interpolation; ``paths.*`` are checked for known keys only (they resolve
through Hydra at run time).
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


from xfer.errors import ConfigError
from xfer.seeding import MAX_SEED

# -- rules ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    # "an integer >= 1", may contain {name} (the key's last part); a callable makes the text on first use
    allowed: str | Callable[[], str]
    nullable: bool = False

    def or_null(self) -> "Rule":
        return Rule(self.ok, self.allowed, True)

    def text(self) -> str:
        return self.allowed if isinstance(self.allowed, str) else self.allowed()

    def check(self, key: str, value: Any) -> None:
        if value is None and self.nullable:
            return
        if not self.ok(value):
            allowed = self.text().format(name=key.rsplit(".", 1)[-1])
            if self.nullable:
                allowed += " or null"
            raise ConfigError(f"{key}={show(value)}: must be {allowed}")


def show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    if lo is not None and hi is not None:
        text = f"an integer {lo}..{hi}"
    elif lo is not None:
        text = f"an integer >= {lo}"
    else:
        text = "an integer"
    return Rule(lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi), text)


def number(gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None) -> Rule:
    low = f"{gt:g} < " if gt is not None else f"{ge:g} <= " if ge is not None else ""
    high = f" < {lt:g}" if lt is not None else f" <= {le:g}" if le is not None else ""
    if low and high:
        text = f"a number with {low}{{name}}{high}"
    elif low:
        text = "a number " + (f"> {gt:g}" if gt is not None else f">= {ge:g}")
    elif high:
        text = "a number " + high.strip()
    else:
        text = "a finite number"

    def ok(v: Any) -> bool:
        return (_is_num(v) and (gt is None or v > gt) and (ge is None or v >= ge)
                and (lt is None or v < lt) and (le is None or v <= le))
    return Rule(ok, text)


def choice(*values: Any) -> Rule:
    # by type and value: true is not 1, 32 is not "32"
    return Rule(lambda v: any(type(v) is type(x) and v == x for x in values),
                "one of " + ", ".join(show(v) for v in values))


def literal_choice(alias: Callable[[], Any]) -> Rule:
    """``choice`` of the values of the ``Literal`` alias that ``alias()`` returns, read on first use: the
    module that owns the list may import torch, which importing the schema should not."""
    rule = functools.cache(lambda: choice(*typing.get_args(alias())))
    return Rule(lambda v: rule().ok(v), lambda: rule().text())


def list_of(item: Rule, length: int | None = None, nonempty: bool = False) -> Rule:
    what = f"a list of {length} " if length else "a non-empty list of " if nonempty else "a list of "
    text = what + item.text().replace("an integer", "integers").replace("a number", "numbers")

    def ok(v: Any) -> bool:
        return (isinstance(v, (list, tuple)) and (length is None or len(v) == length)
                and (not nonempty or len(v) > 0) and all(item.ok(x) for x in v))
    return Rule(ok, text)


def either(*rules: Rule) -> Rule:
    return Rule(lambda v: any(r.ok(v) for r in rules), " or ".join(r.text() for r in rules))


STRING = Rule(lambda v: isinstance(v, str), "a string")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
MAPPING = Rule(lambda v: isinstance(v, Mapping), "a mapping of settings")
ANY = Rule(lambda v: True, "anything")

# -- the schema ----------------------------------------------------------------------------------
def _schedule() -> Any:
    from xfer.models.lr_schedule import Schedule  # the list of schedules; imports torch

    return Schedule


SEED = integer(0, MAX_SEED)  # seeding.epoch_seed(seed, epoch) must fit 32 bits
OPTIM: dict[str, Rule] = {
    "lr": number(gt=0),
    "trunk_lr": number(gt=0),
    "weight_decay": number(ge=0),
    "betas": list_of(number(ge=0, lt=1), length=2),
    "schedule": literal_choice(_schedule),
    "warmup_fraction": number(ge=0, lt=1),
    "label_smoothing": number(ge=0, lt=1),
    "plateau_factor": number(gt=0, lt=1),
    "plateau_patience": integer(0),
    "fused": choice("auto", True, False),
}
SOURCE_STAGE: dict[str, Any] = {"enabled": BOOL, "max_epochs": integer(1), "optim": OPTIM}
ANALYSIS_TRANSFER: dict[str, Rule] = {"max_train": integer(10), "max_val": integer(1), "warmup_steps": integer(0),
                                      "knn_k": integer(1), "probe_weight_decay": number(ge=0),
                                      "batch_size": integer(1)}
ANALYSIS_SIMILARITY: dict[str, Rule] = {"examples": integer(0)}
ANALYSIS: dict[str, Any] = {"drift": BOOL, "similarity": ANALYSIS_SIMILARITY, "transfer": ANALYSIS_TRANSFER}
TOP: dict[str, Any] = {
    "name": STRING,
    "seed": SEED,
    "threads": integer(1).or_null(),
    "ckpt_path": STRING.or_null(),
    "resume": STRING.or_null(),
    "eval_test": BOOL,
    "reinit_seed_offset": integer(0),
    "trunk_cache_wait_s": number(gt=0),
    "random_trunk": BOOL,
    "target_adapter_from_source": BOOL,
    "source_stage": SOURCE_STAGE,
    "analysis": ANALYSIS,
}
_RATIO = either(integer(0), number(ge=0, le=1))
TRAINER: dict[str, Rule] = {
    "max_epochs": integer(1),
    "min_epochs": integer(0).or_null(),
    "max_steps": integer(-1),
    "accelerator": STRING,
    "precision": choice(64, 32, 16, "64", "32", "16", "bf16", "16-true", "16-mixed", "bf16-true",
                        "bf16-mixed", "32-true", "64-true", "transformer-engine",
                        "transformer-engine-float16"),
    "gradient_clip_val": number(ge=0).or_null(),
    "gradient_clip_algorithm": choice("norm", "value").or_null(),
    "log_every_n_steps": integer(1),
    "num_sanity_val_steps": integer(-1),
    "check_val_every_n_epoch": integer(1).or_null(),
    "accumulate_grad_batches": integer(1),
    "enable_progress_bar": BOOL,
    "enable_model_summary": BOOL,
    "enable_checkpointing": BOOL,
    "fast_dev_run": either(BOOL, integer(0)),
    "limit_train_batches": _RATIO.or_null(),
    "limit_val_batches": _RATIO.or_null(),
    "limit_test_batches": _RATIO.or_null(),
}
# build.trainer passes these itself
TRAINER_RESERVED = ("logger", "callbacks", "default_root_dir")
# callbacks.<name>: null, or a _target_ node checked as a part; these values also have rules
CALLBACK_RULES: dict[str, Rule] = {"monitor": STRING, "mode": choice("min", "max"),
                                   "save_last": either(BOOL, choice("link")), "refresh_rate": integer(1)}
PATHS = {"root_dir": ANY, "log_dir": ANY, "cache_dir": ANY, "output_dir": ANY}
# A data set config: its data module's arguments (checked against the _target_ class; these values have
# rules) and ``reader``, a node naming a reader function whose keywords are checked against that
# function. "reader.<key>" rules apply to the reader's keywords, wherever the reader takes them.
DATA: dict[str, Rule] = {
    "_target_": STRING,
    "name": STRING,
    "reader.path": STRING.or_null(),
    "reader.channels": choice(1, 3),
    "reader.in_memory": either(BOOL, choice("auto")),
    "reader.in_memory_limit_mb": number(gt=0),
    "classes": list_of(integer(0), nonempty=True).or_null(),
    "val_fraction": number(ge=0, lt=1),
    "test_fraction": number(ge=0, lt=1),
    "split_seed": integer(0),
    "group_column": either(STRING, integer(0)).or_null(),
    "fraction": number(gt=0, le=1),
    "samples_per_class": integer(1).or_null(),
    "batch_size": integer(1),
    "eval_batch_size": integer(1),
    "num_workers": integer(0),
    "on_device": either(BOOL, choice("auto")),
    "on_device_limit_mb": number(gt=0),
    "pin_memory": BOOL,
    "read_cache_dir": STRING.or_null(),
    "max_len": integer(1),
    "vocab_size": integer(3),
    "min_frequency": integer(1),
    "lowercase": BOOL,
    "image_size": list_of(integer(1), length=2).or_null(),
}
# Ranges of model settings, by name, wherever the chosen class takes them.
PART_RULES: dict[str, Rule] = {
    "dropout": number(ge=0, lt=1),
    "embed_dim": integer(1),
    "width": integer(1),
    "hidden": integer(1),
    "in_channels": integer(1),
    "channels": list_of(integer(1), nonempty=True),
    "widths": list_of(integer(1), nonempty=True),
    "maps": integer(1),
}
# A part's settings with a fixed list of values (trunk.pool, strategy.bn_policy) are not listed here: the
# constructor annotates them with a Literal alias of the module that owns the list, and the rule is read
# from that annotation (_rule_from_default).
# Loggers of optional extras, by class name: the module they need and the extra that installs it.
NEEDS_PACKAGE = {"MLFlowLogger": ("mlflow", "mlflow"), "WandbLogger": ("wandb", "wandb")}
# Arguments the code supplies when it builds a part; never config keys.
INJECTED = {"self", "spec", "out_channels", "in_features", "num_classes", "dirpath", "save_dir", "version", "run_name",
            "preprocessing"}
PARTS = ("trunk", "source_adapter", "target_adapter", "head", "strategy")
DATASETS = ("source", "target")
GROUPS = (*DATASETS, *PARTS, "optim", "trainer", "logger", "callbacks", "paths")
IGNORED_TOP = ("hydra",)


# -- walking -------------------------------------------------------------------------------------
def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for the first key or value that is not allowed."""
    for key in _keys(cfg):
        if key in IGNORED_TOP:
            continue
        if key not in TOP and key not in GROUPS:
            raise unknown(key, [*TOP, *GROUPS])
    for key, rule in TOP.items():
        if key in cfg:
            _check(cfg, key, rule, key)
    if "optim" in cfg:
        _check(cfg, "optim", OPTIM, "optim")
    if "callbacks" in cfg:
        _check_named_parts(cfg.callbacks, "callbacks", CALLBACK_RULES)
    if cfg.get("logger") is not None:
        _check_named_parts(cfg.logger, "logger", {})
    if "paths" in cfg:
        _check_keys(cfg.paths, "paths", PATHS)
    if "trainer" in cfg:
        _check_trainer(cfg.trainer)
    for group in DATASETS:
        if group in cfg:
            _check_data(cfg[group], group)
    for group in PARTS:
        if cfg.get(group) is not None:
            _check_part(cfg[group], group)
    _check_fused(cfg)


def _check_fused(cfg: DictConfig) -> None:
    """Lightning refuses to clip a fused optimizer's gradients under mixed precision."""
    trainer = cfg.get("trainer") or {}
    mixed = "mixed" in str(trainer.get("precision", ""))
    for prefix, optim in (("optim", cfg.get("optim")), ("source_stage.optim", (cfg.get("source_stage") or {}).get("optim"))):
        if optim is not None and optim.get("fused") is True and mixed and trainer.get("gradient_clip_val"):
            raise ConfigError(f"{prefix}.fused=true with trainer.precision={trainer.precision} and gradient clipping: "
                              f"Lightning cannot clip a fused optimizer under mixed precision; allowed: auto or false")


def allowed_keys(dotted: str) -> list[str] | None:
    """The keys allowed under a node (``optim``, ``trainer``, ``source_stage.optim``, ``""`` for the
    top level) when they are known without composing the config, else None."""
    if dotted == "trainer":
        return trainer_keys()
    tables: dict[str, Any] = {"": [*TOP, *GROUPS], "optim": OPTIM, "paths": PATHS,
                              "source_stage": SOURCE_STAGE, "source_stage.optim": OPTIM,
                              "analysis": ANALYSIS, "analysis.transfer": ANALYSIS_TRANSFER,
                              "analysis.similarity": ANALYSIS_SIMILARITY}
    if dotted in tables:
        return list(tables[dotted])
    parent, _, name = dotted.partition(".")
    if parent == "callbacks" and name and "." not in name:  # a shipped callback: its file's target's keys
        from hydra.utils import get_object
        from omegaconf import OmegaConf

        file = Path(__file__).resolve().parents[2] / "conf" / "callbacks" / f"{name}.yaml"
        try:
            params = constructor_params(get_object(OmegaConf.load(file)[name]["_target_"]))
        except Exception:  # noqa: BLE001 - not a shipped callback: no list to offer
            return None
        return None if params is None else list(params)
    return None


# Keys that existed once: naming one says why it went and what to do instead.
REMOVED = {
    "objective": "objective was removed: a sweeper (Optuna) always maximises the best validation accuracy; "
                 "the test split is never a tuning objective (scripts/tune.py tunes every strategy on validation)",
}


def unknown(key: str, allowed: list[str] | tuple[str, ...], extra: str = "") -> ConfigError:
    if key.lstrip("+~") in REMOVED:
        return ConfigError(REMOVED[key.lstrip("+~")])
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, list(allowed), n=1, cutoff=0.6)
    hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
    listed = extra or ", ".join(sorted(k for k in allowed if k != "_target_"))
    return ConfigError(f"{key} is not a known key{hint}; allowed: {listed}")


def trainer_keys() -> list[str]:
    import pytorch_lightning as pl

    params = inspect.signature(pl.Trainer.__init__).parameters
    return ["_target_", *(p for p in params if p != "self" and p not in TRAINER_RESERVED)]


def _keys(node: DictConfig) -> list[str]:
    return [str(k) for k in node.keys()]


def _value(node: DictConfig, key: str, full: str) -> Any:
    try:
        value = node[key]
    except OmegaConfBaseException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{full} cannot be read: {first}") from None
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _check(node: DictConfig, key: str, rule: Any, full: str) -> None:
    if isinstance(rule, dict):
        sub = node[key]
        if not isinstance(sub, DictConfig):
            raise ConfigError(f"{full}={show(_value(node, key, full))}: must be a mapping with keys "
                              f"{', '.join(rule)}")
        _check_keys(sub, full, rule)
        for k, r in rule.items():
            if k in sub:
                _check(sub, k, r, f"{full}.{k}")
        return
    rule.check(full, _value(node, key, full))


def _check_keys(node: Any, prefix: str, allowed: Mapping[str, Any] | list[str], extra: str = "") -> None:
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{prefix}={show(node)}: must be a mapping of settings")
    for k in _keys(node):
        if k not in allowed:
            raise unknown(f"{prefix}.{k}", list(allowed), extra)


def _check_trainer(node: Any) -> None:
    reserved = [k for k in TRAINER_RESERVED if isinstance(node, DictConfig) and k in node]
    if reserved:
        raise ConfigError(f"trainer.{reserved[0]} cannot be set: xfer passes it to the Trainer itself")
    _check_keys(node, "trainer", trainer_keys(), extra="the arguments of pytorch_lightning.Trainer")
    for k, rule in TRAINER.items():
        if k in node:
            _check(node, k, rule, f"trainer.{k}")
    plugins = node.get("plugins") if isinstance(node, DictConfig) else None
    for i, plugin in enumerate(plugins if isinstance(plugins, ListConfig) else [plugins]):
        if isinstance(plugin, DictConfig):  # a _target_ node (a checkpoint writer); Lightning's strings it checks itself
            _check_part(plugin, f"trainer.plugins[{i}]" if isinstance(plugins, ListConfig) else "trainer.plugins")


def _check_data(node: Any, group: str) -> None:
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{group}={show(node)}: must be a data set config (choose one with {group}=<name>)")
    if "_target_" not in node:
        raise ConfigError(f"{group}._target_ is missing; choose a data set with {group}=<name>")
    from hydra.utils import get_object

    target = _value(node, "_target_", f"{group}._target_")
    try:
        cls = get_object(target)
    except Exception:  # noqa: BLE001 - any import failure is the same mistake for the user
        raise ConfigError(f"{group}._target_={target}: no such data module can be imported") from None
    # the reader: a node that Hydra turns into a partial of a reader function, called by the data module
    example = "e.g. {_target_: xfer.data.readers_text.read_csv_text, _partial_: true, path: ...}"
    if "reader" not in node:
        raise ConfigError(f"{group}.reader is missing: a data set names its reader function ({example})")
    reader = node["reader"]
    if not isinstance(reader, DictConfig) or "_target_" not in reader:
        raise ConfigError(f"{group}.reader={show(_value(node, 'reader', f'{group}.reader'))}: must be a reader "
                          f"node with a _target_ ({example})")
    reader_target = _value(reader, "_target_", f"{group}.reader._target_")
    try:
        function = get_object(reader_target)
    except Exception:  # noqa: BLE001
        raise ConfigError(f"{group}.reader._target_={reader_target}: no such reader function can be imported") from None
    if not callable(function):
        raise ConfigError(f"{group}.reader._target_={reader_target}: not a function")
    partial = _value(reader, "_partial_", f"{group}.reader._partial_") if "_partial_" in reader else None
    if partial is not True:
        raise ConfigError(f"{group}.reader._partial_={show(partial)}: must be true (the data module calls the "
                          f"reader when it loads)")
    signature = inspect.signature(function).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.values())
    handed = tuple(getattr(cls, "handed_to_reader", ()))  # the data module passes these on itself
    reader_keys = [k for k, p in signature.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                   and k not in handed]
    for k in _keys(reader):
        if k in ("_target_", "_partial_", "_convert_", "_recursive_"):
            continue
        if k in handed and (k in signature or takes_any):
            raise ConfigError(f"{group}.reader.{k} cannot be set: the data module hands the reader its own "
                              f"{group}.{k}; set {group}.{k}")
        if k not in reader_keys and not takes_any:
            raise unknown(f"{group}.reader.{k}", reader_keys)
    # the data module's own keys: its constructor's arguments, less the run's seed (the pipeline passes it)
    params = constructor_params(cls) if isinstance(cls, type) else None
    if params is not None:
        allowed = ["_target_", *(k for k in params if k != "seed")]
        for k in _keys(node):
            if k in allowed:
                continue
            if k in reader_keys or k == "reader_args":
                raise ConfigError(f"{group}.{k} is a setting of the reader now: set {group}.reader."
                                  f"{'<key>' if k == 'reader_args' else k}")
            raise unknown(f"{group}.{k}", allowed)
    for k, rule in DATA.items():
        parent, _, key = k.rpartition(".")
        if parent == "reader":
            if key in reader:
                _check(reader, key, rule, f"{group}.reader.{key}")
        elif k in node:
            _check(node, k, rule, f"{group}.{k}")
    if node.get("augment") is not None:
        _check_augment(node.augment, f"{group}.augment")
    val, test = node.get("val_fraction", 0.1), node.get("test_fraction", 0.1)
    if val + test >= 1:
        raise ConfigError(f"{group}.val_fraction={show(val)} and {group}.test_fraction={show(test)}: "
                          f"must add up to less than 1")


def _check_augment(node: Any, prefix: str) -> None:
    """An image data set's ``augment``: a node building an Augment from a list of transform nodes."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"{prefix}={show(node)}: must be an augment config; choose one with "
                          f"augment@{prefix}=<name> (none, flip_crop, randaugment, trivialaugment) or {prefix}=null")
    _check_part(node, prefix)
    transforms = node.get("transforms")
    if not isinstance(transforms, ListConfig):
        raise ConfigError(f"{prefix}.transforms={show(transforms)}: must be a list of _target_ nodes "
                          f"(torchvision.transforms.v2 classes)")
    for i, t in enumerate(transforms):
        _check_part(t, f"{prefix}.transforms[{i}]")


def _check_named_parts(node: Any, group: str, rules: Mapping[str, Rule]) -> None:
    """``callbacks`` and ``logger``: a mapping of names to null or a _target_ node, each checked as a part."""
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{group}={show(node)}: must be a mapping of names to _target_ nodes or null")
    for name in _keys(node):
        if node[name] is None:
            continue
        needs = NEEDS_PACKAGE.get(str(node[name].get("_target_", "")).rsplit(".", 1)[-1])
        if needs is not None and importlib.util.find_spec(needs[0]) is None:
            raise ConfigError(f"{group}.{name} ({node[name]._target_}) needs the {needs[0]} package, which is not "
                              f"installed; install it with: pip install 'xfer[{needs[1]}]', or choose another {group}")
        _check_part(node[name], f"{group}.{name}")
        for k, rule in rules.items():
            if k in node[name]:
                _check(node[name], k, rule, f"{group}.{name}.{k}")


def _check_part(node: Any, group: str) -> None:
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"{group} must be a config with a _target_; choose one with {group}=<name>")
    target = _value(node, "_target_", f"{group}._target_")
    try:
        from hydra.utils import get_object

        cls = get_object(target)
    except Exception:  # noqa: BLE001 - any import failure is the same mistake for the user
        raise ConfigError(f"{group}._target_={target}: no such class can be imported") from None
    if not callable(cls):
        raise ConfigError(f"{group}._target_={target}: not a class or a function")
    params = constructor_params(cls)
    if params is not None:
        _check_keys(node, group, ["_target_", *params])
    for k in _keys(node):
        if k == "_target_":
            continue
        full = f"{group}.{k}"
        rule = PART_RULES.get(k)
        if rule is None and params is not None and k in params:
            rule = _rule_from_default(params[k])
        if rule is not None:
            _check(node, k, rule, full)


def constructor_params(cls: type) -> dict[str, inspect.Parameter] | None:
    """The keyword arguments ``cls(...)`` accepts (less those the code injects), or None when it takes
    any (``**kwargs`` that reach a constructor that accepts anything)."""
    from xfer.freezing.base import Freezing

    params: dict[str, inspect.Parameter] = {}
    if not isinstance(cls, type):  # a function that builds the part (a callback factory)
        sig = inspect.signature(cls)
        hints = _type_hints(cls)
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        return {name: p.replace(annotation=hints[name]) if name in hints else p for name, p in sig.parameters.items()
                if p.kind is not p.VAR_POSITIONAL and name not in INJECTED}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        init = vars(klass)["__init__"]
        sig = inspect.signature(init)
        hints = _type_hints(init)
        open_ended = False
        for name, p in sig.parameters.items():
            if p.kind is p.VAR_KEYWORD:
                open_ended = True
            elif p.kind is not p.VAR_POSITIONAL and name not in INJECTED:
                params.setdefault(name, p.replace(annotation=hints[name]) if name in hints else p)
        if not open_ended:
            return params
        if klass is Freezing:  # its **settings are refused: the settings are exactly those collected
            return params
    return None


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """``func``'s annotations as objects (``from __future__ import annotations`` leaves strings); one that
    cannot be resolved (a name imported for type checking only) is left out, and its default's type rules."""
    try:
        return typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - resolve them one by one instead
        pass
    hints = {}
    for name, annotation in getattr(func, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, getattr(func, "__globals__", {})) if isinstance(annotation, str) else annotation
        except Exception:  # noqa: BLE001 - this one stays unresolved
            continue
    return hints


def literal_values(annotation: Any) -> tuple[tuple[Any, ...], bool] | None:
    """The values of a ``Literal[...]`` annotation (also inside ``X | None``) and whether None is allowed
    too, or None when the annotation is no Literal."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation), False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        literals = [a for a in args if typing.get_origin(a) is typing.Literal]
        if literals and all(a is type(None) or a in literals for a in args):
            return tuple(v for a in literals for v in typing.get_args(a)), type(None) in args
    return None


def _rule_from_default(p: inspect.Parameter) -> Rule | None:
    """The rule for a part's setting: its ``Literal`` annotation's values, else the type of its default."""
    literal = literal_values(p.annotation)
    if literal is not None:
        rule = choice(*literal[0])
        return rule.or_null() if literal[1] else rule
    default = p.default
    rule: Rule | None = None
    if isinstance(default, bool):
        rule = BOOL
    elif isinstance(default, int):
        rule = integer()
    elif isinstance(default, float):
        rule = number()
    elif isinstance(default, str):
        rule = STRING
    elif isinstance(default, (list, tuple)):
        rule = Rule(lambda v: isinstance(v, (list, tuple)), "a list")
    if rule is not None and "None" in str(p.annotation):
        rule = rule.or_null()
    return rule
