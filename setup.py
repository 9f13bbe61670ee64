"""Build script: compiles the Cython fast path `tsq._fastclock`, or installs pure Python without it.

PEP 621 metadata lives in pyproject.toml; this file only adds the optional extension. If Cython or
a C compiler is missing (or the build fails), the install still succeeds and `tsq.clock` uses the
pure-Python backend; a single clear message says so.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# The firmware sources `tsq demo` builds its simulated devices from (tsq/demo/firmware.py): shipped as
# package data, so an installed demo runs the real firmware, not only a checkout's.
FIRMWARE_SOURCES = ("Makefile", "include", "src", "ports/posix")

NOTICE = (
    "\n*** tsq: the Cython fast path (tsq._fastclock) was NOT built: {why}\n"
    "*** tsq: installing the pure-Python clock backend; everything works, stamping is slower.\n"
    "*** tsq: install a C compiler, the Python headers and Cython, then reinstall to get it.\n"
)


class OptionalBuildExt(build_ext):
    """build_ext that degrades to pure Python instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            sys.stderr.write(NOTICE.format(why=exc))

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            sys.stderr.write(NOTICE.format(why=exc))


class BuildPyWithFirmware(build_py):
    """build_py that also copies firmware-bridge's host-build sources into tsq/demo/firmware-src."""

    def run(self) -> None:
        super().run()
        src = Path(__file__).resolve().parent / "firmware-bridge"
        if not (src / "Makefile").is_file():
            return  # building from an sdist without them: the demo falls back to stand-ins
        dest = Path(self.build_lib) / "tsq" / "demo" / "firmware-src"
        shutil.rmtree(dest, ignore_errors=True)
        for rel in FIRMWARE_SOURCES:
            item = src / rel
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if item.is_dir():
                shutil.copytree(item, target, ignore=shutil.ignore_patterns("*.o", "build"))
            elif item.is_file():
                shutil.copy2(item, target)


def extensions() -> list:  # type: ignore[type-arg]
    if os.environ.get("TSQ_NO_EXTENSION"):
        sys.stderr.write(NOTICE.format(why="TSQ_NO_EXTENSION is set"))
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write(NOTICE.format(why="Cython is not installed"))
        return []
    from setuptools import Extension

    ext = Extension(
        "tsq._fastclock",
        ["tsq/_fastclock.pyx"],
        extra_compile_args=["-O2", "-std=gnu99"],
    )
    return list(cythonize([ext], language_level=3, quiet=True))


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithFirmware})
