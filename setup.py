"""Build script: everything is in pyproject.toml except the optional C accelerator.

``optional=True``: without a C compiler and the Python headers the build goes on without it and
modelshield runs its pure-Python pickle loop (same results, slower on big pickles).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "modelshield.pickle._fastloop",
            ["src/modelshield/pickle/_fastloop.c"],
            optional=True,
        )
    ]
)
