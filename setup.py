# Only here because cffi's setuptools hook (cffi_modules) is a setup() keyword;
# everything else lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["csrc/build.py:ffibuilder"])
