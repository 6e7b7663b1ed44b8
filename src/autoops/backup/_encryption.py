"""Client-side encryption of backups in the age file format (https://age-encryption.org/v1).

A file is a text header (one recipient stanza wrapping a random 16-byte file key, then an
HMAC-SHA256 of the header) followed by a 16-byte nonce and the payload in 64 KiB chunks, each
sealed with ChaCha20-Poly1305 under a key derived by HKDF-SHA256, the chunk's nonce being its
11-byte counter and a last-chunk flag (the STREAM construction). So a flipped byte, a dropped,
repeated or reordered chunk and a truncation all fail authentication. Recipients are X25519 keys
(key files are age identity files: ``age -d -i KEYFILE`` reads a backup) or a passphrase through
scrypt. Only the published format is implemented, with the ``cryptography`` primitives: no
construction of our own.
"""

from __future__ import annotations

import base64
import hmac
import io
import os
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .._errors import ConfigError
from ._errors import BackupVerifyError, EncryptionKeyError

__all__ = ["ENCRYPTED_SUFFIX", "PASSPHRASE_VARIABLE", "EncryptingEncoder", "Encryption"]

ENCRYPTED_SUFFIX: Final = ".age"
PASSPHRASE_VARIABLE: Final = "AUTOOPS_BACKUP_PASSPHRASE"  # noqa: S105 (a variable name)

_INTRO: Final = b"age-encryption.org/v1\n"
_CHUNK: Final = 64 * 1024
_TAG: Final = 16
_SEALED_CHUNK: Final = _CHUNK + _TAG
_ZERO_NONCE: Final = bytes(12)
_X25519_LABEL: Final = b"age-encryption.org/v1/X25519"
_SCRYPT_LABEL: Final = b"age-encryption.org/v1/scrypt"
_MAX_HEADER: Final = 64 * 1024
# age's own default; the reader accepts up to age's maximum so files from `age -p` open too.
_SCRYPT_WORK_FACTOR: Final = 18
_SCRYPT_MAX_WORK_FACTOR: Final = 22


# encodings ------------------------------------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes, where: str) -> bytes:
    """age's base64: standard alphabet, no padding, canonical."""
    try:
        if b"=" in text:
            raise ValueError("padding")
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise BackupVerifyError(f"{where}: the age header holds bad base64") from None
    if _b64(data) != text:
        raise BackupVerifyError(f"{where}: the age header holds non-canonical base64")
    return data


_BECH32: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_polymod(values: Sequence[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            checksum ^= generator[i] if (top >> i) & 1 else 0
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _regroup(data: Sequence[int], source_bits: int, target_bits: int, pad: bool) -> list[int]:
    accumulator = bits = 0
    out = []
    mask = (1 << target_bits) - 1
    for value in data:
        accumulator = (accumulator << source_bits) | value
        bits += source_bits
        while bits >= target_bits:
            bits -= target_bits
            out.append((accumulator >> bits) & mask)
    if pad and bits:
        out.append((accumulator << (target_bits - bits)) & mask)
    elif not pad and (bits >= source_bits or (accumulator << (target_bits - bits)) & mask):
        raise ValueError("bad padding")
    return out


def _bech32_encode(hrp: str, data: bytes) -> str:
    words = _regroup(data, 8, 5, pad=True)
    polymod = _bech32_polymod([*_hrp_expand(hrp), *words, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[w] for w in words + checksum)


def _bech32_decode(text: str, hrp: str) -> bytes:
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    separator = text.rfind("1")
    if text[:separator] != hrp or len(text) - separator < 7:
        raise ValueError(f"not a {hrp} string")
    try:
        words = [_BECH32.index(c) for c in text[separator + 1 :]]
    except ValueError:
        raise ValueError("bad character") from None
    if _bech32_polymod([*_hrp_expand(hrp), *words]) != 1:
        raise ValueError("bad checksum")
    return bytes(_regroup(words[:-6], 5, 8, pad=False))


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(secret)


# header ---------------------------------------------------------------------------------------


class _Stanza:
    def __init__(self, kind: bytes, arguments: list[bytes], body: bytes) -> None:
        self.kind = kind
        self.arguments = arguments
        self.body = body

    def encode(self) -> bytes:
        line = b" ".join([b"->", self.kind, *self.arguments]) + b"\n"
        text = _b64(self.body)
        lines = [text[i : i + 64] for i in range(0, len(text), 64)]
        if len(text) % 64 == 0:
            lines.append(b"")  # a full last line would read as "more follows"
        return line + b"".join(part + b"\n" for part in lines)


def _header_mac(file_key: bytes, header: bytes) -> bytes:
    return hmac.digest(_hkdf(file_key, b"", b"header"), header, "sha256")


def _read_exactly(handle: IO[bytes], size: int) -> bytes:
    parts = []
    while size:
        part = handle.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


class _HeaderReader:
    """Reads the header line by line from a stream, keeping what it read past the header."""

    def __init__(self, handle: IO[bytes], where: str) -> None:
        self._handle = handle
        self._where = where
        self._buffer = b""
        self.consumed = b""

    def line(self) -> bytes:
        while b"\n" not in self._buffer:
            more = self._handle.read(4096)
            if not more or len(self.consumed) + len(self._buffer) > _MAX_HEADER:
                raise BackupVerifyError(
                    f"{self._where}: not an age-encrypted file (no complete header); it is "
                    "truncated, or was stored without encryption"
                )
            self._buffer += more
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.consumed += line + b"\n"
        return line

    def rest(self) -> bytes:
        return self._buffer


def _parse_header(reader: _HeaderReader, where: str) -> tuple[list[_Stanza], bytes, bytes]:
    """The stanzas, the header bytes the MAC covers and the MAC."""
    if reader.line() + b"\n" != _INTRO:
        raise BackupVerifyError(
            f"{where}: not an age v1 file; it was stored without encryption or is damaged"
        )
    stanzas: list[_Stanza] = []
    while True:
        line = reader.line()
        if line.startswith(b"--- "):
            covered = reader.consumed[: -len(line) - 1] + b"---"
            return stanzas, covered, _unb64(line[4:], where)
        if not line.startswith(b"-> "):
            raise BackupVerifyError(f"{where}: the age header is malformed")
        kind, *arguments = line[3:].split(b" ")
        body = b""
        while True:
            body_line = reader.line()
            body += body_line
            if len(body_line) < 64:
                break
        stanzas.append(_Stanza(kind, arguments, _unb64(body, where)))


# payload --------------------------------------------------------------------------------------


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class _PayloadWriter:
    """Seals plaintext into 64 KiB chunks; a chunk is held back until more data (or the end)
    shows whether it is the last."""

    def __init__(self, file_key: bytes) -> None:
        nonce = secrets.token_bytes(16)
        self.prefix = nonce
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._pending = b""
        self._counter = 0

    def feed(self, data: bytes) -> bytes:
        if len(self._pending) + len(data) <= _CHUNK:
            self._pending += data
            return b""
        # Chunks are sealed straight from the caller's buffer, without copying it.
        with memoryview(self._pending + data if self._pending else data) as buffer:
            sealed = []
            start = 0
            while len(buffer) - start > _CHUNK:
                sealed.append(self._seal(buffer[start : start + _CHUNK], last=False))
                start += _CHUNK
            self._pending = bytes(buffer[start:])
        return b"".join(sealed)

    def finish(self) -> bytes:
        sealed = self._seal(self._pending, last=True)
        self._pending = b""
        return sealed

    def _seal(self, chunk: bytes | memoryview, *, last: bool) -> bytes:
        sealed = self._aead.encrypt(_chunk_nonce(self._counter, last), chunk, None)
        self._counter += 1
        return sealed


class _DecryptingReader:
    """A read-only file over an age payload: every chunk is authenticated before any of its
    bytes are returned."""

    def __init__(self, handle: IO[bytes], file_key: bytes, rest: bytes, where: str) -> None:
        self._handle = handle
        self._where = where
        self._pending = rest
        nonce = self._raw(16)
        if len(nonce) != 16:
            raise BackupVerifyError(f"{where}: the encrypted file is truncated after its header")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._next = self._raw(_SEALED_CHUNK)
        self._plain = b""
        self._done = False

    def _raw(self, size: int) -> bytes:
        if self._pending:
            taken, self._pending = self._pending[:size], self._pending[size:]
            return taken + _read_exactly(self._handle, size - len(taken))
        return _read_exactly(self._handle, size)

    def _open_chunk(self) -> bytes:
        sealed = self._next
        self._next = self._raw(_SEALED_CHUNK) if len(sealed) == _SEALED_CHUNK else b""
        last = not self._next
        if len(sealed) < _TAG or (last and len(sealed) == _TAG and self._counter > 0):
            raise self._tampered()
        try:
            plain = self._aead.decrypt(_chunk_nonce(self._counter, last), sealed, None)
        except InvalidTag:
            raise self._tampered() from None
        self._counter += 1
        self._done = last
        return plain

    def _tampered(self) -> BackupVerifyError:
        return BackupVerifyError(
            f"{self._where}: chunk {self._counter} of the encrypted data fails authentication: "
            "the file was modified, truncated or its chunks reordered; it cannot be trusted"
        )

    def read(self, size: int = -1) -> bytes:
        parts = [self._plain]
        held = len(self._plain)
        while not self._done and (size < 0 or held < size):
            parts.append(self._open_chunk())
            held += len(parts[-1])
        data = b"".join(parts)
        if size < 0 or size >= len(data):
            self._plain = b""
            return data
        self._plain = data[size:]
        return data[:size]

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> _DecryptingReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# the public face ------------------------------------------------------------------------------


class _Encoder(Protocol):
    level: int

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Encryption:
    """Encrypts backups for one key (an age X25519 identity) or a passphrase (age's scrypt).

    Make one with :meth:`from_keyfile`, :meth:`generate_key`, :meth:`from_passphrase` or
    :meth:`from_environment` and pass it to ``Backuper(storage, encryption=...)``. A key file may
    hold several identities (one per line, as age's): new backups are encrypted for the first,
    and any of them decrypts, which is how a key is rotated (docs/backup.md).
    """

    def __init__(
        self,
        *,
        identities: Sequence[X25519PrivateKey] = (),
        passphrase: str | None = None,
        work_factor: int = _SCRYPT_WORK_FACTOR,
        label: str = "",
    ) -> None:
        if bool(identities) == (passphrase is not None):
            raise ConfigError("Encryption needs either a key or a passphrase, not both")
        if passphrase is not None and not passphrase:
            raise ConfigError("the backup passphrase is empty")
        if not 10 <= work_factor <= _SCRYPT_MAX_WORK_FACTOR:
            raise ConfigError(f"scrypt work factor must be 10..{_SCRYPT_MAX_WORK_FACTOR}")
        self._identities = list(identities)
        self._passphrase = passphrase.encode("utf-8") if passphrase is not None else None
        self._work_factor = work_factor
        self._scrypt_keys: dict[tuple[bytes, int], bytes] = {}
        self.label = label

    # making one -------------------------------------------------------------------------------

    @classmethod
    def generate_key(cls, path: str | os.PathLike[str]) -> Encryption:
        """Write a new age identity file (mode 0600; an existing file is never overwritten) and
        return an Encryption for it. Back this file up apart from the backups: without it they
        cannot be read."""
        target = Path(path).expanduser()
        identity = X25519PrivateKey.generate()
        secret = _bech32_encode("age-secret-key-", identity.private_bytes_raw()).upper()
        recipient = _recipient_of(identity)
        created = datetime.now(UTC).replace(microsecond=0).isoformat()
        text = f"# created: {created}\n# public key: {recipient}\n{secret}\n"
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(
                f"{target} exists; a key file is never overwritten (its backups would be lost)"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot create key file {target}: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        return cls(identities=[identity], label=str(target))

    @classmethod
    def from_keyfile(cls, path: str | os.PathLike[str]) -> Encryption:
        """Read an age identity file (``autoops-backup keygen`` or ``age-keygen`` writes one)."""
        source = Path(path).expanduser()
        try:
            lines = source.read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not an age key file"
            raise ConfigError(f"cannot read backup key file {source}: {reason}") from None
        identities = []
        for number, text in enumerate(lines, 1):
            line = text.strip()
            if not line or line.startswith("#"):
                continue
            try:
                raw = _bech32_decode(line, "age-secret-key-")
                identities.append(X25519PrivateKey.from_private_bytes(raw))
            except ValueError:
                raise ConfigError(
                    f"{source} line {number} is not an age secret key (AGE-SECRET-KEY-1...)"
                ) from None
        if not identities:
            raise ConfigError(f"{source} holds no age secret key (AGE-SECRET-KEY-1...)")
        return cls(identities=identities, label=str(source))

    @classmethod
    def from_passphrase(
        cls, passphrase: str, *, work_factor: int = _SCRYPT_WORK_FACTOR
    ) -> Encryption:
        """Encrypt with a passphrase (age's scrypt recipient, N = 2**work_factor)."""
        return cls(passphrase=passphrase, work_factor=work_factor, label="passphrase")

    @classmethod
    def from_environment(
        cls, variable: str = PASSPHRASE_VARIABLE, *, work_factor: int = _SCRYPT_WORK_FACTOR
    ) -> Encryption:
        """A passphrase taken from an environment variable (never from the command line)."""
        passphrase = os.environ.get(variable)
        if not passphrase:
            raise ConfigError(f"the backup passphrase variable {variable} is unset or empty")
        instance = cls.from_passphrase(passphrase, work_factor=work_factor)
        instance.label = f"${variable}"
        return instance

    @property
    def recipient(self) -> str:
        """Who new backups are encrypted for: an ``age1...`` public key, or ``"scrypt"``."""
        return _recipient_of(self._identities[0]) if self._identities else "scrypt"

    # encrypting -------------------------------------------------------------------------------

    def _header(self, file_key: bytes) -> bytes:
        if self._identities:
            stanza = _x25519_stanza(file_key, self._identities[0].public_key())
        else:
            salt = secrets.token_bytes(16)
            wrap_key = self._scrypt_key(salt, self._work_factor)
            body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
            arguments = [_b64(salt), str(self._work_factor).encode()]
            stanza = _Stanza(b"scrypt", arguments, body)
        covered = _INTRO + stanza.encode() + b"---"
        return covered + b" " + _b64(_header_mac(file_key, covered)) + b"\n"

    def encoder(self, inner: _Encoder) -> EncryptingEncoder:
        """Wrap a compressor so its output leaves encrypted."""
        return EncryptingEncoder(inner, self)

    def encrypt_bytes(self, data: bytes) -> bytes:
        """A small value as one age file."""
        file_key = secrets.token_bytes(16)
        writer = _PayloadWriter(file_key)
        return self._header(file_key) + writer.prefix + writer.feed(data) + writer.finish()

    # decrypting -------------------------------------------------------------------------------

    def open(self, handle: IO[bytes], where: str) -> IO[bytes]:
        """A reader of the plaintext of an age file open in ``handle`` (closed with it). A wrong
        key raises :class:`EncryptionKeyError` at once; tampering raises
        :class:`BackupVerifyError` before the affected chunk's bytes are returned."""
        try:
            reader = _HeaderReader(handle, where)
            stanzas, covered, mac = _parse_header(reader, where)
            file_key = self._unwrap(stanzas, where)
            if not hmac.compare_digest(_header_mac(file_key, covered), mac):
                raise BackupVerifyError(
                    f"{where}: the age header fails authentication; the file was modified"
                )
            return _DecryptingReader(handle, file_key, reader.rest(), where)  # type: ignore[return-value]
        except BaseException:
            handle.close()
            raise

    def decrypt_bytes(self, data: bytes, where: str) -> bytes:
        """The plaintext of a small age file."""
        with self.open(io.BytesIO(data), where) as reader:
            return reader.read()

    def authenticate(self, handle: IO[bytes], where: str) -> None:
        """Read a whole age file, checking every chunk; raises as :meth:`open` does."""
        with self.open(handle, where) as reader:
            while reader.read(1 << 20):
                pass

    def _unwrap(self, stanzas: list[_Stanza], where: str) -> bytes:
        kinds = [stanza.kind for stanza in stanzas]
        if b"scrypt" in kinds and len(stanzas) != 1:
            raise BackupVerifyError(f"{where}: an scrypt stanza must be the only one")
        for stanza in stanzas:
            if stanza.kind == b"X25519" and self._identities:
                for identity in self._identities:
                    file_key = _x25519_unwrap(stanza, identity, where)
                    if file_key is not None:
                        return file_key
            elif stanza.kind == b"scrypt" and self._passphrase is not None:
                file_key = self._scrypt_unwrap(stanza, where)
                if file_key is not None:
                    return file_key
        needed = "passphrase" if b"scrypt" in kinds else "key"
        have = "the passphrase" if self._passphrase is not None else f"the key in {self.label}"
        raise EncryptionKeyError(
            f"{where} cannot be decrypted with {have}: it was encrypted for another {needed} "
            "(after a key rotation, keep the old key in the key file to read old backups)"
        )

    def _scrypt_key(self, salt: bytes, work_factor: int) -> bytes:
        assert self._passphrase is not None
        cached = self._scrypt_keys.get((salt, work_factor))
        if cached is None:
            kdf = Scrypt(salt=_SCRYPT_LABEL + salt, length=32, n=1 << work_factor, r=8, p=1)
            cached = self._scrypt_keys[(salt, work_factor)] = kdf.derive(self._passphrase)
        return cached

    def _scrypt_unwrap(self, stanza: _Stanza, where: str) -> bytes | None:
        if len(stanza.arguments) != 2 or not stanza.arguments[1].isdigit():
            raise BackupVerifyError(f"{where}: malformed scrypt stanza in the age header")
        salt = _unb64(stanza.arguments[0], where)
        work_factor = int(stanza.arguments[1])
        if len(salt) != 16 or not 1 <= work_factor <= _SCRYPT_MAX_WORK_FACTOR:
            raise BackupVerifyError(f"{where}: scrypt parameters out of range in the age header")
        try:
            key = self._scrypt_key(salt, work_factor)
            return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, stanza.body, None)
        except InvalidTag:
            return None

    def __repr__(self) -> str:
        return f"Encryption({self.label or self.recipient!r}, recipient={self.recipient!r})"


class EncryptingEncoder:
    """A compressor whose output is encrypted: the write pipeline's one encryption point."""

    def __init__(self, inner: _Encoder, encryption: Encryption) -> None:
        self._inner = inner
        self.level = inner.level
        file_key = secrets.token_bytes(16)
        self._writer = _PayloadWriter(file_key)
        self._prefix: bytes | None = encryption._header(file_key) + self._writer.prefix

    def _start(self, data: bytes) -> bytes:
        if self._prefix is None:
            return data
        data, self._prefix = self._prefix + data, None
        return data

    def feed(self, data: bytes) -> bytes:
        """Compress and encrypt ``data``; returns what is ready."""
        return self._start(self._writer.feed(self._inner.feed(data)))

    def finish(self) -> bytes:
        """The remaining bytes, ending with the last (flagged) chunk."""
        tail = self._writer.feed(self._inner.finish())
        return self._start(tail + self._writer.finish())


def _recipient_of(identity: X25519PrivateKey) -> str:
    return _bech32_encode("age", identity.public_key().public_bytes_raw())


def _x25519_stanza(file_key: bytes, recipient: X25519PublicKey) -> _Stanza:
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(recipient)
    salt = share + recipient.public_bytes_raw()
    wrap_key = _hkdf(shared, salt, _X25519_LABEL)
    body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
    return _Stanza(b"X25519", [_b64(share)], body)


def _x25519_unwrap(stanza: _Stanza, identity: X25519PrivateKey, where: str) -> bytes | None:
    if len(stanza.arguments) != 1 or len(stanza.body) != 32:
        raise BackupVerifyError(f"{where}: malformed X25519 stanza in the age header")
    share = _unb64(stanza.arguments[0], where)
    if len(share) != 32:
        raise BackupVerifyError(f"{where}: malformed X25519 stanza in the age header")
    try:
        shared = identity.exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:  # an all-zero shared secret: a low-order point, never from age
        raise BackupVerifyError(f"{where}: invalid X25519 share in the age header") from None
    salt = share + identity.public_key().public_bytes_raw()
    try:
        return ChaCha20Poly1305(_hkdf(shared, salt, _X25519_LABEL)).decrypt(
            _ZERO_NONCE, stanza.body, None
        )
    except InvalidTag:
        return None
