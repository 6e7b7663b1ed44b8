"""CacheSync: keep a cache in step with a database table, as a production job."""

from ._report import SyncReport, SyncStatus, read_sync_status
from ._sync import CacheSync

__all__ = ["CacheSync", "SyncReport", "SyncStatus", "read_sync_status"]
