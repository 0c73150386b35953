"""The CUDA build of med42-rs. Import ``med42_rs``, not this package: it picks this build when it
loads (see ``med42_rs._backend``).

The extension ``_native`` links the CUDA libraries (cuBLAS, cuRAND, the runtime, NVRTC) and the
driver (``libcuda.so.1``). pip installs the libraries as ``nvidia-*`` wheels under site-packages
``nvidia/cu13/lib``, a folder the dynamic loader does not search: they are loaded here first, by
full path, so that the extension finds them already loaded. The driver comes with the system.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

# dependencies first: cuBLAS needs cuBLASLt
_LIBRARIES = ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libnvrtc.so.13")


def nvidia_lib_dirs() -> list[Path]:
    """The ``nvidia/cu13/lib`` folders of the installed ``nvidia-*`` wheels."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or spec.submodule_search_locations is None:
        return []
    dirs = (Path(p) / "cu13" / "lib" for p in spec.submodule_search_locations)
    return [d for d in dirs if d.is_dir()]


def _preload() -> list[str]:
    loaded = []
    dirs = nvidia_lib_dirs()
    for name in _LIBRARIES:
        for d in dirs:
            if (d / name).exists():
                ctypes.CDLL(str(d / name), mode=ctypes.RTLD_GLOBAL)
                loaded.append(str(d / name))
                break
    return loaded


preloaded: list[str] = _preload()
