"""Which native engine this process runs: the CPU build in this package, or the CUDA build that
the optional ``med42-rs-cuda`` distribution adds (package ``med42_rs_cuda``).

The package imports this module before anything else touches ``med42_rs._native``: it imports one
of the two extension modules and installs it as ``med42_rs._native`` (in ``sys.modules`` and as the
package attribute), so every ``from . import _native`` in the package, and the type stubs, see one
module with one interface. ``MED42_BACKEND`` chooses:

- ``auto`` (the default): the CUDA build when ``med42_rs_cuda`` is installed, is this version and
  imports (it needs an NVIDIA driver, ``libcuda.so.1``); otherwise the CPU build, with the reason
  recorded for ``build_info()``. A CPU user who never installs ``med42-rs-cuda`` never loads it.
- ``cpu``: the CPU build, even where the CUDA build is installed.
- ``cuda``: the CUDA build, or :class:`~med42_rs.errors.DeviceUnavailableError` saying what is
  missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

from .errors import DeviceUnavailableError, InvalidParameterError

__all__ = ["CPU_MODULE", "CUDA_MODULE", "choice", "cuda_unavailable", "native_module"]

CPU_MODULE = "med42_rs._native"
CUDA_MODULE = "med42_rs_cuda._native"
CHOICES = ("auto", "cpu", "cuda")


def _version() -> str | None:
    """This package's installed version, or None where it is not installed (a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("med42-rs")
    except PackageNotFoundError:
        return None


def _import_cuda() -> ModuleType:
    """Import the CUDA build; any failure is an ImportError whose message says what is missing."""
    if importlib.util.find_spec("med42_rs_cuda") is None:
        raise ImportError("the CUDA build is not installed (pip install med42-rs-cuda)")
    try:
        module = importlib.import_module(CUDA_MODULE)
    except ImportError as e:
        # The usual causes: no NVIDIA driver, or the nvidia-* wheels (cuBLAS...) are not installed.
        hint = ""
        if "libcuda.so" in str(e):
            hint = " (no NVIDIA driver on this machine)"
        elif "libcu" in str(e) or "libnvrtc" in str(e):
            hint = " (the CUDA 13 libraries are missing: pip install med42-rs-cuda with its dependencies)"
        raise ImportError(f"the CUDA build (med42-rs-cuda) does not load here{hint}: {e}") from e
    built: str = module.build_info()["version"]
    installed = _version()
    if installed is not None and built != installed:
        raise ImportError(
            f"med42-rs-cuda {built} does not match med42-rs {installed}: install the same version of both"
        )
    return module


def _select(requested: str) -> tuple[ModuleType, str | None]:
    """The native module for ``MED42_BACKEND=requested``, and why CUDA is not used (None if it is)."""
    if requested not in CHOICES:
        raise InvalidParameterError(f"MED42_BACKEND={requested!r}: use one of {', '.join(CHOICES)}")
    if requested != "cpu":
        try:
            return _import_cuda(), None
        except ImportError as e:
            if requested == "cuda":
                raise DeviceUnavailableError(
                    f"MED42_BACKEND=cuda, but {e}. "
                    "Unset MED42_BACKEND or set MED42_BACKEND=cpu to run on the CPU."
                ) from e
            reason = str(e)
    else:
        reason = "MED42_BACKEND=cpu"
    return importlib.import_module(CPU_MODULE), reason


choice = os.environ.get("MED42_BACKEND", "auto").strip().lower() or "auto"
_module, cuda_unavailable = _select(choice)
native_module: str = CPU_MODULE if cuda_unavailable is not None else CUDA_MODULE
sys.modules[CPU_MODULE] = _module
# the package is still initializing: set its attribute so that `from . import _native` finds this module
setattr(sys.modules["med42_rs"], "_native", _module)  # noqa: B010
