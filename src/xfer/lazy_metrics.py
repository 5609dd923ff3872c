"""torchmetrics without its import cost where a run does not use it.

Lightning imports ``torchmetrics`` at start-up only for ``Metric``, ``MetricCollection`` and the version,
but the package's ``__init__`` imports every metric family, and with them torchvision's model zoo and
scipy.signal: several seconds before the first step, in every process (each ddp_spawn rank, each sweep
worker). ``install()`` registers the package with its ``__init__`` not yet run: its submodules import as
usual (``torchmetrics.metric``, ``torchmetrics.classification``), the three names Lightning reads resolve
from them, and the first access to any other top-level name runs the real ``__init__`` into the same
module object, after which torchmetrics is exactly what a plain import gives.

``torchmetrics.metric`` imports ``torchmetrics.utilities.plot``, which imports matplotlib and pyplot
(~0.4 s, ~30 MiB) for ``Metric.plot``. ``install()`` also has that module load with its matplotlib
names bound to stand-ins that import matplotlib on first use (``plt``, ``matplotlib``, the ``Axes``
type its isinstance checks read, the style decorator): the rest of its code runs as written.

``XFER_EAGER_TORCHMETRICS=1`` turns both off (a plain import).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
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
    install_plot()
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


# -- torchmetrics.utilities.plot without matplotlib until a plot is drawn ------------------------------
PLOT = "torchmetrics.utilities.plot"
# its matplotlib block, as torchmetrics writes it; the lines after are its fallback for no matplotlib
_MPL_BLOCK = """if _MATPLOTLIB_AVAILABLE:
    import matplotlib
    import matplotlib.axes
    import matplotlib.pyplot as plt

    _PLOT_OUT_TYPE = tuple[plt.Figure, Union[matplotlib.axes.Axes, np.ndarray]]
    _AX_TYPE = matplotlib.axes.Axes
    _CMAP_TYPE = Union[matplotlib.colors.Colormap, str]

    style_change = plt.style.context
else:"""
_MPL_DEFERRED = """if _MATPLOTLIB_AVAILABLE:  # xfer.lazy_metrics: matplotlib is imported when a plot is drawn
    from xfer.lazy_metrics import OnFirstUse as _OnFirstUse, Axes as _Axes, Style as _Style
    matplotlib, plt = _OnFirstUse("matplotlib"), _OnFirstUse("matplotlib.pyplot")
    _PLOT_OUT_TYPE = tuple[object, object]
    _AX_TYPE = _Axes
    _CMAP_TYPE = object

    style_change = _Style
"""
# blank lines up to the block's length, so tracebacks from the module keep its file's line numbers
_MPL_DEFERRED += "\n" * (_MPL_BLOCK.count("\n") - _MPL_DEFERRED.count("\n")) + "else:"


def _deferred(source: str) -> str | None:
    """plot.py's source with the matplotlib block deferred; None where the block is not there as written."""
    return source.replace(_MPL_BLOCK, _MPL_DEFERRED, 1) if _MPL_BLOCK in source else None


class OnFirstUse:
    """A module's stand-in: its attributes are the module's, imported (with pyplot) on first use."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        importlib.import_module("matplotlib.pyplot")  # as the block replaced: matplotlib.axes, pyplot and all
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<{self._name}, imported on first use (xfer.lazy_metrics)>"


class _AxesCheck(type):
    @staticmethod
    def _real() -> type:
        return importlib.import_module("matplotlib.axes").Axes

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._real())

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls._real())


class Axes(metaclass=_AxesCheck):
    """``matplotlib.axes.Axes`` to ``isinstance``: matplotlib is imported at the first check."""


class Style(contextlib.ContextDecorator):
    """``plt.style.context(...)`` as a decorator or a with block, made when the block is entered."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._args, self._kwargs = args, kwargs
        self._entered: list[Any] = []

    def _recreate_cm(self) -> "Style":
        return Style(*self._args, **self._kwargs)

    def __enter__(self) -> Any:
        cm = importlib.import_module("matplotlib.pyplot").style.context(*self._args, **self._kwargs)
        self._entered.append(cm)
        return cm.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._entered.pop().__exit__(*exc)


class _PlotLoader(importlib.machinery.SourceFileLoader):
    """Loads torchmetrics.utilities.plot from its own file with the matplotlib block deferred."""

    def __init__(self, fullname: str, path: str, source: str):
        super().__init__(fullname, path)
        self._source = source

    def get_code(self, fullname: str) -> Any:
        return compile(self._source, self.path, "exec")


class _PlotFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != PLOT:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)  # where the file is, as usual
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader) or not spec.origin:
            return spec
        try:
            source = _deferred(spec.loader.get_data(spec.origin).decode("utf-8"))
        except (OSError, UnicodeDecodeError):
            return spec
        if source is None:  # another torchmetrics: a plain import
            return spec
        return importlib.util.spec_from_file_location(fullname, spec.origin,
                                                      loader=_PlotLoader(fullname, spec.origin, source))


def install_plot() -> bool:
    """Have ``torchmetrics.utilities.plot`` defer matplotlib; False where it is imported or turned off."""
    if PLOT in sys.modules or os.environ.get("XFER_EAGER_TORCHMETRICS") == "1":
        return False
    if not any(isinstance(f, _PlotFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PlotFinder())
    return True


def loaded() -> bool:
    """Whether torchmetrics' own ``__init__`` has run (a plain import, or a name only it defines was read)."""
    module = sys.modules.get("torchmetrics")
    return module is not None and (not isinstance(module, _Deferred) or bool(module.__dict__.get("_xfer_loaded")))
