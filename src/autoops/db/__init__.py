"""Database clients: MySQL/MariaDB and SQLite behind one interface."""

from ._client import DbClient, Row, Transaction
from ._identifiers import quote_identifier
from ._mysql import MySQLClient
from ._sqlite import SQLiteClient

__all__ = ["DbClient", "MySQLClient", "Row", "SQLiteClient", "Transaction", "quote_identifier"]
