"""Compiled kernels, built on first use with PyTorch's C++ extension tooling (a C++ compiler
and ninja) and cached by PyTorch (``~/.cache/torch_extensions``, or ``TORCH_EXTENSIONS_DIR``).

They are an acceleration only: where a kernel cannot be built (no C++ compiler, a failed
build) or ``MDCTR_NATIVE=0`` is set, callers fall back to their PyTorch path and one warning
line says why. ``make install`` builds them ahead of time.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("segment_lora.cpp")


def compiler_name() -> str:
    """The C++ compiler ``torch.utils.cpp_extension`` builds with: ``CXX``, else ``c++``."""
    return os.environ.get("CXX", "c++")


def has_compiler() -> bool:
    """Whether that compiler is on PATH (without it the kernels are skipped, not attempted)."""
    return shutil.which(compiler_name()) is not None


@functools.cache
def segment_lora() -> ModuleType | None:
    """The per-segment MLoRA kernels (``forward``, ``backward``; see ``segment_lora.cpp``), or None."""
    if os.environ.get("MDCTR_NATIVE", "1") == "0":
        return None
    if not has_compiler():
        log.warning(
            "MLoRA runs without its compiled kernels (slower): no C++ compiler %r on PATH", compiler_name()
        )
        return None
    if shutil.which("ninja") is None:  # the ninja wheel's binary sits next to this interpreter
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    start = time.perf_counter()
    try:
        from torch.utils.cpp_extension import load

        module = load(
            "mdctr_segment_lora",
            [str(SOURCE)],
            extra_cflags=["-O3", "-march=native", "-std=c++20", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as error:  # noqa: BLE001 - any build failure means: use the PyTorch path
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        log.warning(
            "MLoRA runs without its compiled kernels (slower): building %s failed: %s",
            SOURCE.name,
            lines[-1][:300] if lines else type(error).__name__,
        )
        log.debug("the build's full error: %s", error)
        return None
    log.debug("segment_lora kernels ready in %.1f s", time.perf_counter() - start)
    return module
