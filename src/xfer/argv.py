"""The command line before Hydra composes it: ``resume=<run folder>`` expansion and the choice pre-check.

Both run before ``@hydra.main``, so a typo in a choice is answered at once, in one line, and a sweep
never starts jobs that are bound to fail. Overrides are read with Hydra's own parser, so every form of
its grammar (``glob(*)``, ``choice(a,b)``, ``a,b``, ``range``, ``interval``, ``+``/``~``/``++``) means
here exactly what it means to Hydra.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import OmegaConf

from xfer.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

_OVERRIDE_KEY = re.compile(r"^(?:~|\+\+|\+)?([^=~+-][^=]*?)(?:=|$)")


def override_key(arg: str) -> str | None:
    """The key an override sets or removes (``+a.b=1``, ``a.b=1``, ``~a.b`` -> ``a.b``); None for a flag (``-m``)."""
    m = _OVERRIDE_KEY.match(arg.strip())
    return m.group(1).strip() if m else None


def expand_resume(argv: list[str]) -> list[str]:
    """``resume=<run folder>``: that run's command-line overrides, then the ones given here (which win),
    so ``python train.py resume=logs/img2txt/runs/<run>`` alone continues the run with its settings.
    Raises ConfigError when the folder is not a run folder."""
    folder = next((a.split("=", 1)[1] for a in argv if "=" in a and override_key(a) == "resume"), None)
    if folder in (None, "", "null", "last"):
        return argv
    saved = Path(folder).expanduser() / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        what = ("not a run folder (no .hydra/overrides.yaml)" if Path(folder).expanduser().is_dir()
                else "no such folder")
        raise ConfigError(f"resume={folder}: {what}; give a folder such as logs/<experiment>/runs/<run>")
    try:
        earlier = [str(o) for o in OmegaConf.load(saved)]
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"resume={folder}: {saved} is unreadable ({type(err).__name__})") from None
    given = {k for k in (override_key(a) for a in argv) if k is not None}
    kept = [o for o in earlier if override_key(o) not in given | {"resume", "ckpt_path"}]
    return [*argv, *kept]


BASE = "base"  # conf/base/: shared parts that configs pull in through their defaults lists, never chosen
# conf/dataset/: every data set, chosen as source=<name> or target=<name> (conf/source and conf/target link to it)
# conf/study/: make study's presets (scripts/study.py study=<preset>), not a group of train.py's config
STORAGE = (BASE, "dataset", "study")


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Each config group (a folder of conf/, less conf/base/ and conf/dataset/, which are chosen through
    others, and conf/study/, which scripts/study.py reads) and its choices (the .yaml files in it)."""
    groups = {}
    # followlinks: conf/source and conf/target are links to conf/dataset (any data set on either side)
    for folder, _, files in os.walk(conf_dir, followlinks=True):
        group = Path(folder).relative_to(conf_dir).as_posix()
        choices = sorted(f[:-len(".yaml")] for f in files if f.endswith(".yaml"))
        if group != "." and group.split("/")[0] not in STORAGE and choices:
            groups[group] = choices
    return dict(sorted(groups.items()))


def check_choices(argv: list[str], conf_dir: Path = CONF_DIR) -> str | None:
    """An error line for the first command-line choice that names no config file, else None. A
    ``glob(...)`` must match at least one choice. Overrides Hydra cannot parse are left to Hydra, which
    reports them (in one line, see hydra_errors)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, Glob
    from hydra.errors import HydraException

    groups = config_groups(conf_dir)
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
    except HydraException:
        return None
    for o in overrides:
        group = o.key_or_group
        if group.lstrip("+~") == "study":  # conf/study/ is make study's, not a group of train.py
            value = o.input_line.split("=", 1)[1]
            return (f"study={value}: a study is not a train.py setting; run it with make study STUDY={value} "
                    f"(python scripts/study.py study={value})")
        # hydra/* choices also come from plugins (joblib, submitit_*, optuna): Hydra checks those itself
        if group not in groups or group.startswith("hydra/") or o.is_delete():
            continue
        allowed = groups[group]
        key = o.input_line.split("=", 1)[0].lstrip("+~")  # as written: adapter@target_adapter, not adapter
        value = o.value()
        if isinstance(value, Glob):
            if not value.filter(allowed):
                return f"{key}={o.input_line.split('=', 1)[1]} matches no choice; allowed: {', '.join(allowed)}"
            continue
        if isinstance(value, ChoiceSweep) or (o.is_sweep_override() and not isinstance(value, Glob)):
            try:
                values = list(o.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - range/interval over a config group: Hydra says why
                continue
        else:
            values = [o.get_value_element_as_str()]
        for v in values:
            if v not in allowed and v != "null":
                return f"{key}={v} is not a known choice; allowed: {', '.join(allowed)}"
    return None
