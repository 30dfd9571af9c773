"""Exceptions raised by the deepfm library.

DeepFMError
├── SchemaError      an invalid field or dataset schema
├── EncodingError    raw values that cannot be encoded (wrong type, NaN, ...)
├── ConfigError      an invalid experiment config or override
├── DataError        missing or malformed training data
├── RunError         a missing or unreadable run directory of `deepfm train`
└── ArtifactError    a missing, corrupted or inconsistent exported artifact
"""

from __future__ import annotations

from collections.abc import Sequence


class DeepFMError(Exception):
    """Root of every error the library raises on purpose."""


class SchemaError(DeepFMError):
    """A field or dataset schema is invalid."""


class EncodingError(DeepFMError):
    """Raw feature values cannot be encoded.

    Args:
        message: what is wrong.
        field: the request field at fault, if known.
        row: the row (instance index) at fault, if known.
        problems: the errors this one gathers, one per field at fault; default: just this one.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        row: int | None = None,
        problems: Sequence[EncodingError] = (),
    ) -> None:
        super().__init__(message)
        self.field = field
        self.row = row
        self.problems: tuple[EncodingError, ...] = tuple(problems) or (self,)


class ConfigError(DeepFMError):
    """An experiment config or a command-line override is invalid."""


class DataError(DeepFMError):
    """Training data is missing or malformed."""


class RunError(DeepFMError):
    """A run directory of `deepfm train` is missing or its checkpoint unreadable."""


class ArtifactError(DeepFMError):
    """An exported artifact is missing, corrupted or inconsistent.

    Args:
        message: what is wrong.
        path: the file at fault.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
