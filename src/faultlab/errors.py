"""Errors that faultlab raises for bad user input.

The CLI turns a :class:`FaultlabError` into one line on stderr and exit status 2;
library users catch it like any ``ValueError``.
"""
from __future__ import annotations


class FaultlabError(ValueError):
    """Bad input from the user: the message names the file/field, what was expected and the fix."""


class ModelLoadError(FaultlabError):
    """A model reference could not be imported or loaded."""


class DataError(FaultlabError):
    """A dataset is missing, malformed or does not fit the model."""


class FaultSpecError(FaultlabError):
    """A fault, fault list or config does not fit the target."""
