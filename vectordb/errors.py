"""Exceptions raised by vectordb.

Input errors subclass ValueError, as chromadb's validation errors do, so `except ValueError` keeps
working for code written against chromadb.
"""


class VectorDBError(Exception):
    """Base class of every vectordb error."""


class InvalidArgumentError(VectorDBError, ValueError):
    """An argument was invalid: the message says what was wrong and what was expected."""


class InvalidDimensionError(InvalidArgumentError):
    """An embedding's dimension does not match the collection's."""


class DuplicateIDError(InvalidArgumentError):
    """The same id appears more than once in one call."""


class NotFoundError(VectorDBError, ValueError):
    """A collection (or other named thing) does not exist."""


class CollectionExistsError(InvalidArgumentError):
    """create_collection of a name that already exists."""


class AuthorizationError(VectorDBError):
    """The operation is not allowed by the settings (e.g. reset without allow_reset)."""


class CorruptionError(VectorDBError):
    """A file failed validation; the message names the file."""


class LockedError(VectorDBError):
    """Another process (or client in this process) holds the database's writer lock."""


class ReadOnlyError(VectorDBError):
    """Writes are refused after an I/O error until the collection is reopened."""


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
]
