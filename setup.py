"""Build steps pyproject.toml cannot express: protobuf code generation and the Cython kernel.

- `protos/**/*.proto` -> `orxaq/**/*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py` (the `orxaq.routing.v1`
  package, named like the proto package), made by grpcio-tools before the Python files are collected.
- `_scoring.pyx` -> the extension `orxaq_grpc._scoring`, with release directives (bounds checks and
  wraparound off); `ORXAQ_CYTHON_DEBUG=1` turns the checks back on. No fused multiply-add
  contraction, so the compiled kernel does the pure-Python twin's arithmetic exactly.

The kernel is not optional: a build that cannot compile it fails, so nobody ships the slow twin by
accident. `ORXAQ_NO_EXTENSIONS=1` at build time skips it on purpose.
"""

import os
from pathlib import Path
from typing import ClassVar

from setuptools import Command, Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "protos"


class BuildProtos(Command):
    description = "generate Python modules and stubs from protos/"
    user_options: ClassVar[list] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

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


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        self.run_command("build_protos")
        super().run()


class EggInfoWithProtos(egg_info):
    """egg_info lists package files before build_py runs, so generate first."""

    def run(self) -> None:
        self.run_command("build_protos")
        super().run()


def extensions() -> list:
    if os.environ.get("ORXAQ_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    debug = bool(os.environ.get("ORXAQ_CYTHON_DEBUG"))
    return cythonize(
        [Extension("orxaq_grpc._scoring", ["_scoring.pyx"], extra_compile_args=["-O3", "-ffp-contract=off"])],
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": debug,
            "initializedcheck": debug,
            "cdivision": True,  # divisors are validated config values (> 0)
            "embedsignature": True,
        },
    )


setup(
    ext_modules=extensions(),
    cmdclass={"build_protos": BuildProtos, "build_py": BuildPyWithProtos, "egg_info": EggInfoWithProtos},
)
