"""Builds failsafe._native: the C core (native/core) and its CPython binding (native/binding).

Environment knobs: FAILSAFE_DEBUG=1 (-O0 -g, asserts on), FAILSAFE_SANITIZE=1 (ASan + UBSan),
FAILSAFE_COVERAGE=1 (gcc --coverage at -O0; .gcno/.gcda land beside the objects, under
build/coverage, kept apart so no other build's objects are reused).
"""

import os
import sys
from glob import glob

from setuptools import Extension, setup

CORE = sorted(glob("native/core/*.c"))
BINDING = sorted(glob("native/binding/*.c"))

cflags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]
ldflags: list[str] = []
options: dict[str, dict[str, str]] = {}
if os.environ.get("FAILSAFE_SANITIZE"):
    cflags += ["-O1", "-g", "-fno-omit-frame-pointer", "-UNDEBUG",
               "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    ldflags += ["-fsanitize=address,undefined"]
elif os.environ.get("FAILSAFE_COVERAGE"):
    cflags += ["-O0", "-g", "-DNDEBUG", "--coverage"]
    ldflags += ["--coverage"]
    options["build"] = {"build_base": "build/coverage"}
elif os.environ.get("FAILSAFE_DEBUG"):
    cflags += ["-O0", "-g", "-UNDEBUG"]
else:
    cflags += ["-O2", "-DNDEBUG"]
if sys.platform == "win32":  # MSVC takes its own flags (C11 since Visual Studio 2019 16.8)
    cflags, ldflags = ["/std:c11", "/O2", "/W3", "/DNDEBUG"], []

setup(
    ext_modules=[
        Extension(
            "failsafe._native",
            sources=CORE + BINDING,
            include_dirs=["native/core", "native/binding"],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ],
    options=options,
)
