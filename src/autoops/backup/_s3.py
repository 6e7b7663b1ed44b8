"""Backups in S3 or an S3-compatible object store, through boto3 (the ``autoops[s3]`` extra).

The same guarantees as the local and SFTP storages, in object-store terms:

- A small file is one ``PutObject`` with its SHA-256 (the store rejects a mismatch, and an object
  appears whole or not at all). A large one is a multipart upload of ``part_size`` parts, each
  sent with its SHA-256; the upload is completed only after ``ListParts`` shows every part with
  the size and checksum that was sent, so nothing appears under a final name before it is whole.
  Memory holds one part, never the dump.
- Before a multipart upload starts, a lease object ``<name>.<host>.<pid>.partial`` records the
  writer (host, pid and the process's start time, which tells a reused pid apart); the upload
  carries the same marker in its metadata. The next backup or prune aborts the uploads whose
  lease names a writer that is gone, judged by liveness, never by age (clocks disagree).
- Reads stream; the Backuper checks every stored file's SHA-256 against its manifest.
- Throttling, 5xx and dropped connections are retried by botocore's standard retry mode, a bounded
  number of attempts; what still fails raises a clear :class:`autoops.AutoOpsError`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from typing import IO, Any, Final
from urllib.parse import urlsplit

from .._errors import AuthenticationError, AutoOpsError, ConfigError, ConnectError
from ._errors import BackupError, BackupVerifyError
from ._storage import _ACTIVE, PARTIAL_SUFFIX, Storage, Upload, _partial_name

__all__ = ["SETTINGS_KEYS", "S3Storage"]

log: Final = logging.getLogger("autoops.backup")

SETTINGS_KEYS: Final = ("endpoint_url", "region", "profile", "access_key_id", "secret_access_key")
_MIN_PART: Final = 5 << 20  # S3's smallest part but the last
_WRITER_METADATA: Final = "autoops-writer"
_AUTH_CODES: Final = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "InvalidClientTokenId",
        "AllAccessDisabled",
    }
)
_DIGEST_CODES: Final = frozenset(
    {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidRequest"}
)


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _process_start(pid: int) -> str:
    """When a process started (clock ticks since boot, from /proc): with the pid, it names one
    process for good, since a pid is reused but a start time is not. Empty where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses; fields after it are plain.
    return stat.rsplit(b")", 1)[-1].split()[19].decode("ascii")


def _writer_token() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


class _S3Reader:
    """A stored object's body as a read-only file; network errors become ConnectError."""

    def __init__(self, body: Any, storage: S3Storage, key: str) -> None:
        self._body = body
        self._storage = storage
        self._key = key

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size < 0 else size)  # type: ignore[no-any-return]
        except AutoOpsError:
            raise
        except Exception as exc:
            raise self._storage.error(f"read {self._key}", exc) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()

    def __enter__(self) -> _S3Reader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _S3Upload(Upload):
    def __init__(self, storage: S3Storage, name: str) -> None:
        super().__init__(name)
        self._storage = storage
        self._key = storage.key(name)
        self._lease = _partial_name(name)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._leased = False
        self._finished = False

    def _write(self, data: bytes) -> None:
        self._buffer += data
        part_size = self._storage.part_size
        while len(self._buffer) >= part_size:
            part = bytes(self._buffer[:part_size])
            del self._buffer[:part_size]
            self._send_part(part)

    def _begin(self) -> str:
        storage = self._storage
        writer = _writer_token()
        lease = {"key": self._key, **writer}
        _ACTIVE.add(self._lease)
        storage.put(self._lease, json.dumps(lease).encode("utf-8"))
        self._leased = True
        response = storage.call(
            f"start the upload of {self._key}",
            lambda s3: s3.create_multipart_upload(
                Bucket=storage.bucket,
                Key=self._key,
                ChecksumAlgorithm="SHA256",
                Metadata={_WRITER_METADATA: f"{writer['host']} {writer['pid']} {writer['start']}"},
            ),
        )
        self._upload_id = str(response["UploadId"])
        return self._upload_id

    def _send_part(self, body: bytes) -> None:
        upload_id = self._upload_id or self._begin()
        number = len(self._parts) + 1
        checksum = _b64_sha256(body)
        response = self._storage.call(
            f"upload part {number} of {self._key}",
            lambda s3: s3.upload_part(
                Bucket=self._storage.bucket,
                Key=self._key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ChecksumSHA256=checksum,
            ),
        )
        self._parts.append(
            {
                "PartNumber": number,
                "ETag": response["ETag"],
                "ChecksumSHA256": checksum,
                "Size": len(body),
            }
        )

    def commit(self) -> None:
        assert not self._finished, "commit after commit or abort"
        storage = self._storage
        if self._upload_id is None:
            storage.put(self.name, bytes(self._buffer))
            self._buffer.clear()
            self._finished = True
            return
        try:
            if self._buffer or not self._parts:
                self._send_part(bytes(self._buffer))
                self._buffer.clear()
            self._check_parts()
            storage.call(
                f"complete the upload of {self._key}",
                lambda s3: s3.complete_multipart_upload(
                    Bucket=storage.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={
                        "Parts": [
                            {k: part[k] for k in ("PartNumber", "ETag", "ChecksumSHA256")}
                            for part in self._parts
                        ]
                    },
                ),
            )
        except BaseException:
            self.abort()
            raise
        self._finished = True
        stored = storage.size(self.name)
        if stored != self.size:
            storage.delete(self.name)
            self._release_lease()
            raise BackupVerifyError(
                f"{self._key} in {storage.location} holds {stored} bytes after {self.size} were "
                "uploaded; the store lost part of the upload"
            )
        self._release_lease()

    def _check_parts(self) -> None:
        """Every part the store holds has the size and SHA-256 that was sent."""
        storage = self._storage
        listed: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            page = storage.call(
                f"list the parts of {self._key}",
                lambda s3, after=marker: s3.list_parts(
                    Bucket=storage.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumberMarker=after,
                ),
            )
            for part in page.get("Parts", []):
                listed[int(part["PartNumber"])] = part
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
        for sent in self._parts:
            held = listed.get(sent["PartNumber"])
            checksum = held.get("ChecksumSHA256") if held else None
            if (
                held is None
                or int(held["Size"]) != sent["Size"]
                or checksum
                not in {
                    None,
                    sent["ChecksumSHA256"],
                }
            ):
                raise BackupVerifyError(
                    f"part {sent['PartNumber']} of {self._key} in {storage.location} does not "
                    "hold what was sent (size or SHA-256 differ); the upload was aborted"
                )

    def _release_lease(self) -> None:
        if self._leased:
            with contextlib.suppress(AutoOpsError):
                self._storage.delete(self._lease)
        _ACTIVE.discard(self._lease)

    def abort(self) -> None:
        self._buffer.clear()
        if self._finished:
            return
        self._finished = True
        if self._upload_id is None:
            self._release_lease()
            return
        try:
            self._storage.abort_upload(self._key, self._upload_id)
        except AutoOpsError as exc:
            # The lease stays, so the next backup or prune aborts the upload.
            _ACTIVE.discard(self._lease)
            log.warning("could not abort the upload of %s yet: %s", self._key, exc)
            return
        self._release_lease()


class S3Storage(Storage):
    """Backups in an S3 bucket (or an S3-compatible store at ``endpoint_url``) under ``prefix``.

    Credentials come from boto3's usual chain (environment, ``~/.aws``, instance or container
    roles) or from ``access_key_id``/``secret_access_key``, or a named ``profile``; they never
    appear in a message or repr. ``part_size`` (>= 5 MiB) bounds the memory an upload holds;
    ``max_attempts`` bounds botocore's retries of throttling, 5xx and connection errors.
    Needs ``pip install 'autoops[s3]'``.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        profile: str | None = None,
        part_size: int = 8 << 20,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ConfigError(f"bad S3 bucket name {bucket!r}")
        if part_size < _MIN_PART:
            raise ConfigError(f"S3 part_size must be at least {_MIN_PART} bytes (5 MiB)")
        if max_attempts < 1:
            raise ConfigError("S3 max_attempts must be at least 1")
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigError("give both access_key_id and secret_access_key, or neither")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_size = part_size
        self.location = f"s3://{bucket}/{self.prefix}"
        self._credentials = {
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "aws_session_token": session_token,
        }
        self._profile = profile
        self._config = {
            "retries": {"max_attempts": max_attempts, "mode": "standard"},
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
        }
        self._client: Any = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3Storage:
        """``s3://bucket/prefix`` with the keyword options of the constructor."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.hostname:
            raise ConfigError(f"bad S3 storage {url!r}: use s3://bucket/prefix")
        if parts.username or parts.password:
            raise ConfigError(
                "put no credentials in an s3:// URL: use the AWS environment, a profile or "
                "[backup] settings"
            )
        return cls(parts.netloc, prefix=parts.path, **options)

    @classmethod
    def from_settings(cls, url: str, settings: Mapping[str, Any]) -> S3Storage:
        """``s3://bucket/prefix`` with the S3 keys of a settings table (``[backup]``):
        ``endpoint_url``, ``region``, ``profile``, ``access_key_id``, ``secret_access_key``."""
        options = {key: settings[key] for key in SETTINGS_KEYS if settings.get(key) is not None}
        for key, value in options.items():
            if not isinstance(value, str):
                raise ConfigError(f"[backup] {key} must be a string")
        return cls.from_url(url, **options)

    @property
    def client(self) -> Any:
        """The boto3 S3 client (made on first use)."""
        if self._client is None:
            # boto3 is optional (the autoops[s3] extra): imported when S3 is first used.
            try:
                import boto3  # noqa: PLC0415
                from botocore.config import Config  # noqa: PLC0415
            except ImportError:
                raise ConfigError("S3 storage needs boto3: pip install 'autoops[s3]'") from None
            session = boto3.session.Session(profile_name=self._profile, region_name=self.region)
            self._client = session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                config=Config(**self._config),
                **{k: v for k, v in self._credentials.items() if v is not None},
            )
        return self._client

    def key(self, name: str) -> str:
        """The object key of a file name."""
        if not name or "/" in name or name in {".", ".."}:
            raise ConfigError(f"bad backup file name {name!r}")
        return self.prefix + name

    def error(self, action: str, exc: BaseException) -> AutoOpsError:
        """The autoops error for a boto3/botocore exception raised while doing ``action``."""
        # botocore comes with the optional boto3.
        from botocore.exceptions import (  # noqa: PLC0415
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = self.location + (f" at {self.endpoint_url}" if self.endpoint_url else "")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return AuthenticationError(
                f"no usable AWS credentials to {action} in {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, a profile, or [backup] access_key_id/secret_access_key"
            )
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return ConfigError(
                    f"bucket {self.bucket!r} does not exist in {where}; create it or fix the "
                    "storage setting"
                )
            if code in _AUTH_CODES or status == 403:
                return AuthenticationError(
                    f"{where} refused to {action} ({code or status}): check the credentials "
                    "and the bucket policy"
                )
            if code in {"NoSuchKey", "404", "NotFound"} or status == 404:
                return BackupError(f"cannot {action}: it is not in {where}")
            if code in _DIGEST_CODES:
                return BackupVerifyError(
                    f"{where} rejected the data while trying to {action} ({code}): the bytes "
                    "were damaged on the way; nothing was stored under a final name"
                )
            return ConnectError(
                f"{where} failed to {action} ({code or status}) after the retries allowed; "
                "nothing was left under a final name, run the backup again"
            )
        return ConnectError(
            f"the connection to {where} failed while trying to {action} ({type(exc).__name__}) "
            "after the retries allowed; nothing was left under a final name, run it again"
        )

    def call(self, action: str, fn: Any) -> Any:
        """``fn(client)``, with boto3's errors mapped to autoops's."""
        try:
            return fn(self.client)
        except AutoOpsError:
            raise
        except Exception as exc:
            raise self.error(action, exc) from exc

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` as one object, its SHA-256 checked by the store."""
        key = self.key(name)
        self.call(
            f"upload {key}",
            lambda s3: s3.put_object(
                Bucket=self.bucket, Key=key, Body=data, ChecksumSHA256=_b64_sha256(data)
            ),
        )

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload (its parts are freed)."""

        def abort(s3: Any) -> None:
            from botocore.exceptions import ClientError  # noqa: PLC0415  (optional boto3)

            try:
                s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise

        self.call(f"abort the upload of {key}", abort)

    def create(self, name: str) -> Upload:
        self.key(name)
        return _S3Upload(self, name)

    def open(self, name: str) -> IO[bytes]:
        key = self.key(name)
        response = self.call(
            f"read {key}",
            lambda s3: s3.get_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"),
        )
        return _S3Reader(response["Body"], self, key)  # type: ignore[return-value]

    def names(self) -> list[str]:
        def listing(s3: Any) -> list[str]:
            found = []
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
            )
            for page in pages:
                found += [item["Key"][len(self.prefix) :] for item in page.get("Contents", [])]
            return found

        return sorted(self.call(f"list {self.location}", listing))

    def size(self, name: str) -> int:
        key = self.key(name)
        head = self.call(f"read {key}", lambda s3: s3.head_object(Bucket=self.bucket, Key=key))
        return int(head["ContentLength"])

    def delete(self, name: str) -> None:
        key = self.key(name)
        self.call(f"delete {key}", lambda s3: s3.delete_object(Bucket=self.bucket, Key=key))

    def uploads(self) -> list[dict[str, Any]]:
        """The multipart uploads in progress under the prefix (``Key``, ``UploadId``, ...)."""

        def listing(s3: Any) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            pages = s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                found += page.get("Uploads", [])
            return found

        return list(self.call(f"list the uploads in {self.location}", listing))

    def clean_partials(self) -> list[str]:
        """Abort the multipart uploads whose writer is gone, and remove their leases."""
        removed: list[str] = []
        gone_keys: dict[str, str] = {}
        for name in self.names():
            if name.endswith(PARTIAL_SUFFIX):
                lease = self._read_lease(name)
                if lease is not None and _writer_is_gone(name, lease):
                    gone_keys[str(lease["key"])] = name
        if not gone_keys:
            return removed
        for upload in self.uploads():
            if upload["Key"] in gone_keys:
                self.abort_upload(upload["Key"], upload["UploadId"])
                log.info(
                    "aborted the upload of %s in %s left by an interrupted backup",
                    upload["Key"],
                    self.location,
                )
        for lease_name in gone_keys.values():
            self.delete(lease_name)
            removed.append(lease_name)
        return removed

    def _read_lease(self, name: str) -> dict[str, Any] | None:
        try:
            lease = json.loads(self.read_bytes(name))
        except (BackupError, ValueError):
            return None
        fields = {"key": str, "host": str, "pid": int, "start": str}
        if not isinstance(lease, dict) or not all(
            isinstance(lease.get(field), kind) for field, kind in fields.items()
        ):
            log.warning("ignoring %s in %s: not an autoops upload lease", name, self.location)
            return None
        return lease

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3Storage({self.location!r}{endpoint})"


def _writer_is_gone(lease_name: str, lease: dict[str, Any]) -> bool:
    """Whether the process that wrote a lease no longer runs. Another host's writer cannot be
    seen from here, so its uploads are left to it (and to a bucket lifecycle rule)."""
    if lease["host"] != socket.gethostname():
        return False
    pid = int(lease["pid"])
    if pid == os.getpid() and lease["start"] == _process_start(pid):
        return lease_name not in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return bool(lease["start"]) and _process_start(pid) != lease["start"]
