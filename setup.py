# The one thing pyproject.toml cannot say: build the C core with cffi (see README, "Build").
from setuptools import setup

setup(cffi_modules=["mmiofilter/_cffi_build.py:ffibuilder"])
