"""Exceptions raised by vectordb, under vectordb's names and chromadb's (vectordb.errors doubles as
chromadb.errors for code that catches chroma's classes).

Input errors subclass ValueError, as chromadb's validation errors do, so `except ValueError` keeps
working for code written against chromadb.
"""
from typing import Dict, Type


class VectorDBError(Exception):
    """Base class of every vectordb error (chromadb's name: ChromaError)."""

    def code(self) -> int:
        """The HTTP status that reports this error."""
        return 400

    def message(self) -> str:
        return ", ".join(str(a) for a in self.args)

    @classmethod
    def name(cls) -> str:
        return cls.__name__


ChromaError = VectorDBError


class InternalError(VectorDBError):
    """Something failed inside vectordb that is not the caller's doing."""

    def code(self) -> int:
        return 500


class InvalidArgumentError(VectorDBError, ValueError):
    """An argument was invalid: the message says what was wrong and what was expected."""


class InvalidDimensionError(InvalidArgumentError):
    """An embedding's dimension does not match the collection's."""

    @classmethod
    def name(cls) -> str:
        return "InvalidDimension"


InvalidDimensionException = InvalidDimensionError


class DuplicateIDError(InvalidArgumentError):
    """The same id appears more than once in one call."""

    @classmethod
    def name(cls) -> str:
        return "DuplicateID"


class IDAlreadyExistsError(InvalidArgumentError):
    """chromadb's name for adding an id that exists (vectordb skips such ids, as chromadb does)."""

    def code(self) -> int:
        return 409


class InvalidUUIDError(InvalidArgumentError):
    """A collection id that is not a UUID."""


class InvalidHTTPVersion(VectorDBError):
    """The server answered with an HTTP version or API this client cannot speak."""


class NotFoundError(VectorDBError, ValueError):
    """A collection (or other named thing) does not exist."""

    def code(self) -> int:
        return 404


class UniqueConstraintError(VectorDBError):
    """A name that must be unique is taken."""

    def code(self) -> int:
        return 409


class CollectionExistsError(InvalidArgumentError, UniqueConstraintError, InternalError):
    """create_collection of a name that already exists (chromadb raises InternalError here)."""

    def code(self) -> int:
        return 409


class AuthorizationError(VectorDBError):
    """The operation is not allowed by the settings (e.g. reset without allow_reset)."""

    def code(self) -> int:
        return 403


class ChromaAuthError(AuthorizationError):
    """Authentication failed (a missing or wrong API key)."""

    def code(self) -> int:
        return 401

    @classmethod
    def name(cls) -> str:
        return "AuthError"


class BatchSizeExceededError(InvalidArgumentError):
    """chromadb's batch limit; vectordb has none but memory, so it never raises this."""


class VersionMismatchError(VectorDBError):
    """Client and server versions do not work together."""


class RateLimitError(VectorDBError):
    """chromadb Cloud's rate limit (never raised by vectordb)."""

    def code(self) -> int:
        return 429


class QuotaError(VectorDBError):
    """chromadb Cloud's quotas (never raised by vectordb)."""


class CorruptionError(VectorDBError):
    """A file failed validation; the message names the file."""

    def code(self) -> int:
        return 500


class LockedError(VectorDBError):
    """Another process holds the database's writer lock."""

    def code(self) -> int:
        return 423


class ReadOnlyError(VectorDBError):
    """Writes are refused after an I/O error until the collection is reopened."""

    def code(self) -> int:
        return 503


# chromadb's error_types: the name a server reports -> the class.
error_types: Dict[str, Type[VectorDBError]] = {
    "InvalidDimension": InvalidDimensionError,
    "InvalidArgumentError": InvalidArgumentError,
    "IDAlreadyExists": IDAlreadyExistsError,
    "DuplicateID": DuplicateIDError,
    "InvalidUUID": InvalidUUIDError,
    "InvalidHTTPVersion": InvalidHTTPVersion,
    "AuthorizationError": AuthorizationError,
    "NotFoundError": NotFoundError,
    "BatchSizeExceededError": BatchSizeExceededError,
    "VersionMismatchError": VersionMismatchError,
    "RateLimitError": RateLimitError,
    "AuthError": ChromaAuthError,
    "UniqueConstraintError": UniqueConstraintError,
    "QuotaError": QuotaError,
    "InternalError": InternalError,
    "ChromaError": VectorDBError,
}

__all__ = [
    "VectorDBError",
    "InvalidArgumentError",
    "InvalidDimensionError",
    "DuplicateIDError",
    "NotFoundError",
    "CollectionExistsError",
    "AuthorizationError",
    "CorruptionError",
    "LockedError",
    "ReadOnlyError",
    "ChromaError",
    "InternalError",
    "InvalidDimensionException",
    "IDAlreadyExistsError",
    "InvalidUUIDError",
    "InvalidHTTPVersion",
    "UniqueConstraintError",
    "ChromaAuthError",
    "BatchSizeExceededError",
    "VersionMismatchError",
    "RateLimitError",
    "QuotaError",
    "error_types",
]
