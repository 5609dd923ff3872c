"""torchmetrics without its import cost where a run does not use it.

Lightning imports ``torchmetrics`` at start-up only for ``Metric``, ``MetricCollection`` and the version,
but the package's ``__init__`` imports every metric family, and with them torchvision's model zoo and
scipy.signal: several seconds before the first step, in every process (each ddp_spawn rank, each sweep
worker). ``install()`` registers the package with its ``__init__`` not yet run: its submodules import as
usual (``torchmetrics.metric``, ``torchmetrics.classification``), the three names Lightning reads resolve
from them, and the first access to any other top-level name runs the real ``__init__`` into the same
module object, after which torchmetrics is exactly what a plain import gives.

``XFER_EAGER_TORCHMETRICS=1`` turns this off (a plain import).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
from typing import Any

# the names Lightning reads at import time, and where they live
_CHEAP = {"Metric": "torchmetrics.metric", "MetricCollection": "torchmetrics.collections",
          "__version__": "torchmetrics.__about__"}


class _Deferred(types.ModuleType):
    """``torchmetrics`` whose ``__init__`` runs on the first access to a name it defines."""

    def __getattr__(self, name: str) -> Any:  # only called for names not yet in the module
        if name in _CHEAP and not self.__dict__.get("_xfer_loaded"):
            importlib.import_module("torchmetrics.utilities")  # before .metric, as the real __init__ has it: a cycle
            return getattr(importlib.import_module(_CHEAP[name]), name)
        if name.startswith("__") and name not in ("__version__", "__all__"):
            raise AttributeError(name)
        load(self)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'torchmetrics' has no attribute {name!r}") from None


_lock = threading.RLock()


# torchmetrics' __init__ is cut in two at these lines: what comes before the first (its logger, version,
# a numpy/PIL compatibility patch) runs at install, since its submodules read it; the rest (a scipy.signal
# patch, then every metric family) runs on first use. A torchmetrics without them gets a plain import.
_CUT = 'if package_available("scipy"):'
_REST = "from torchmetrics import functional"


def _split(source: str) -> tuple[str, str] | None:
    head, cut, rest = source.partition("\n" + _CUT)
    return (head, cut.lstrip("\n") + rest) if cut and _REST in rest else None


def load(module: types.ModuleType) -> None:
    """Run the rest of torchmetrics' real ``__init__`` into ``module`` (once)."""
    with _lock:
        if module.__dict__.get("_xfer_loaded"):
            return
        module.__dict__["_xfer_loaded"] = True
        exec(compile(module.__dict__.pop("_xfer_rest"), module.__file__, "exec"), module.__dict__)  # noqa: S102


def install() -> bool:
    """Register the deferred ``torchmetrics``; False where it is already imported, absent, or turned off."""
    if "torchmetrics" in sys.modules or os.environ.get("XFER_EAGER_TORCHMETRICS") == "1":
        return False
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return False
    try:
        with open(spec.origin, encoding="utf-8") as f:
            parts = _split(f.read())
    except OSError:
        return False
    if parts is None:
        return False
    head, rest = parts
    module = _Deferred(spec.name)
    module.__spec__ = spec
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = spec.name
    module.__loader__ = spec.loader
    module.__dict__["_xfer_rest"] = "\n" * head.count("\n") + rest  # tracebacks keep the file's line numbers
    sys.modules[spec.name] = module
    try:
        exec(compile(head, spec.origin, "exec"), module.__dict__)  # noqa: S102
    except BaseException:
        del sys.modules[spec.name]
        raise
    return True


def loaded() -> bool:
    """Whether torchmetrics' own ``__init__`` has run (a plain import, or a name only it defines was read)."""
    module = sys.modules.get("torchmetrics")
    return module is not None and (not isinstance(module, _Deferred) or bool(module.__dict__.get("_xfer_loaded")))
