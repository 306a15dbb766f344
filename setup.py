"""Build steps pyproject.toml cannot express: protobuf code generation and the Cython kernels.

- `protos/**/*.proto` -> `orxaq/**/*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py` (the `orxaq.routing.v1`
  package, named like the proto package), made by grpcio-tools before the Python files are collected.
- `config/` (the three TOML files, `dashboards/`, `scenarios/`) and `protos/` -> package data under
  `orxaq_grpc/_defaults/` (`config/`, `protos/`), the defaults an installed `orxaq-grpc` falls back to
  and `orxaq-grpc init` copies out. Generated, never committed: the top-level `config/` stays the one
  source. Regenerated whole on every build, so a file removed from `config/` leaves no stale copy.
- `_scoring.pyx` and `_learning.pyx` -> the extensions `orxaq_grpc._scoring` and
  `orxaq_grpc._learning`, with release directives (bounds checks and wraparound off);
  `ORXAQ_CYTHON_DEBUG=1` turns the checks back on. No fused multiply-add contraction, so the
  compiled kernels do their pure-Python twins' arithmetic exactly.

The kernels are not optional: a build that cannot compile them fails, so nobody ships a slow twin by
accident. `ORXAQ_NO_EXTENSIONS=1` at build time skips them on purpose.
"""

import os
import shutil
from pathlib import Path
from typing import ClassVar

from setuptools import Command, Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "protos"
CONFIG_ROOT = ROOT / "config"
DEFAULTS = Path("orxaq_grpc") / "_defaults"  # relative: under ROOT, and under build_lib
# What of config/ ships: the three files, the dashboards and the scenarios (not local leftovers).
CONFIG_PATTERNS = ("catalog.toml", "lanes.toml", "policy.toml", "dashboards/*.json", "scenarios/*.toml")


class _Step(Command):
    """A build step with no options of its own."""

    user_options: ClassVar[list] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass


class BuildProtos(_Step):
    description = "generate Python modules and stubs from protos/"

    def run(self) -> None:
        import grpc_tools
        from grpc_tools import protoc

        well_known = Path(grpc_tools.__file__).parent / "_proto"
        sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={well_known}",
            f"--python_out={ROOT}",
            f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}",
            *sources,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on " + " ".join(sources))
        # protoc writes modules only; make each generated folder a regular package.
        for source in sources:
            package = ROOT / Path(source).parent
            while package != ROOT:
                (package / "__init__.py").touch()
                package = package.parent


class BuildDefaults(_Step):
    description = "copy config/ and protos/ into orxaq_grpc/_defaults/ (package data)"

    def run(self) -> None:
        target = ROOT / DEFAULTS
        if not CONFIG_ROOT.is_dir():
            if (target / "config").is_dir():
                return  # building from an sdist, which carries the generated copy
            raise RuntimeError(f"{CONFIG_ROOT} is missing: nothing to package as the default config")
        shutil.rmtree(target, ignore_errors=True)
        for pattern in CONFIG_PATTERNS:
            for source in sorted(CONFIG_ROOT.glob(pattern)):
                _copy(source, target / "config" / source.relative_to(CONFIG_ROOT))
        for source in sorted(PROTO_ROOT.rglob("*.proto")):
            _copy(source, target / "protos" / source.relative_to(PROTO_ROOT))


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        self.run_command("build_protos")
        self.run_command("build_defaults")
        # build_py only adds files: drop a copy left in build/ by an earlier build, so the wheel
        # carries exactly what config/ holds now.
        shutil.rmtree(Path(self.build_lib) / DEFAULTS, ignore_errors=True)
        super().run()


class EggInfoWithProtos(egg_info):
    """egg_info lists package files before build_py runs, so generate first."""

    def run(self) -> None:
        self.run_command("build_protos")
        self.run_command("build_defaults")
        super().run()


def extensions() -> list:
    if os.environ.get("ORXAQ_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    debug = bool(os.environ.get("ORXAQ_CYTHON_DEBUG"))
    return cythonize(
        [
            Extension(f"orxaq_grpc.{name}", [f"{name}.pyx"], extra_compile_args=["-O3", "-ffp-contract=off"])
            for name in ("_scoring", "_learning")
        ],
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": debug,
            "initializedcheck": debug,
            "cdivision": True,  # divisors are validated config values (> 0) or checked in the kernel
            "embedsignature": True,
        },
    )


setup(
    ext_modules=extensions(),
    cmdclass={
        "build_protos": BuildProtos,
        "build_defaults": BuildDefaults,
        "build_py": BuildPyWithProtos,
        "egg_info": EggInfoWithProtos,
    },
)
