"""Salted hashes of file names and record ids (`privacy.hash_ids=true`).

An id (a file's path under the data folder, a record's name) becomes `h_` and the first 16 hex
digits of HMAC-SHA256(salt, id): the same id and salt always give the same hash, so runs on the
same data stay comparable (paired comparisons, cross-validation groups); another salt gives other
hashes. The salt is the secret: whoever holds it can test a guessed name against a hash.

The salt is the environment variable MEDPIPE_ID_SALT when set, else the text of
`privacy.salt_file`, created on first use (64 hex digits from 32 random bytes, mode 0600, atomic).
It is never logged, stored in a processed folder or sent to MLflow; only `salt_id`, a keyed
digest that tells salts apart, enters the data fingerprint (a new salt prepares the data again).
A salt file that exists but is empty, unreadable or readable by everyone is refused (one line).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.errors import ConfigError, DataError

SALT_ENV = "MEDPIPE_ID_SALT"
PREFIX = "h_"
HEX_DIGITS = 16  # 64 bits: no collision among millions of ids (checked anyway)
MIN_SALT = 16  # characters; a shorter salt is guessable
SALT_BYTES = 32  # random bytes of a created salt (written as 64 hex digits)


class IdHasher:
    """`hasher(id)` -> `h_<16 hex>`; `hasher.array(ids)` for a numpy array of ids. Holds the salt:
    its repr shows only `salt_id`, so a log line or traceback never prints the salt."""

    def __init__(self, salt: bytes, origin: str = ""):
        if len(salt) < MIN_SALT:
            raise ConfigError(
                f"privacy: the id salt{origin} is {len(salt)} characters; use at least "
                f"{MIN_SALT} random ones (delete the salt file and a new one is made)"
            )
        self._salt = salt
        self.origin = origin  # where the salt came from, for messages (never the salt)

    def __call__(self, record_id: str) -> str:
        digest = hmac.new(self._salt, str(record_id).encode("utf-8"), hashlib.sha256)
        return PREFIX + digest.hexdigest()[:HEX_DIGITS]

    def __repr__(self) -> str:
        return f"IdHasher(salt_id={self.salt_id})"

    @property
    def salt_id(self) -> str:
        """12 hex digits that differ between salts (a keyed digest: not the salt's hash)."""
        return hmac.new(self._salt, b"medpipe.salt_id", hashlib.sha256).hexdigest()[:12]

    def describe(self) -> dict[str, Any]:
        """The data fingerprint's part: ids hashed, and with which salt (by its id)."""
        return {"hash_ids": f"hmac-sha256-{HEX_DIGITS}", "salt_id": self.salt_id}

    def array(self, ids: Iterable[str]) -> np.ndarray:
        """Every id hashed (a unicode array); a DataError if two different ids hash alike."""
        ids = np.asarray(ids, dtype=str)
        unique, inverse = np.unique(ids, return_inverse=True)
        hashed = np.array([self(v) for v in unique.tolist()], dtype=str)
        if len(np.unique(hashed)) != len(unique):  # 64 bits: not expected before ~10^9 ids
            raise DataError(
                "privacy.hash_ids: two record ids hash alike; use another salt "
                f"(delete the salt file{self.origin} or set {SALT_ENV})"
            )
        return hashed[inverse.reshape(-1)].reshape(ids.shape)


def hasher_of(privacy: Mapping[str, Any] | None) -> IdHasher | None:
    """The hasher a config's `privacy` section asks for (`hash_ids: true`), or None."""
    if not privacy or not privacy.get("hash_ids"):
        return None
    return IdHasher(*read_salt(privacy.get("salt_file")))


def read_salt(salt_file: str | os.PathLike | None) -> tuple[bytes, str]:
    """(salt, where it came from): $MEDPIPE_ID_SALT, else the salt file, created if missing."""
    env = os.environ.get(SALT_ENV, "").strip()
    if env:
        return env.encode("utf-8"), f" (${SALT_ENV})"
    if not salt_file:
        raise ConfigError(
            f"privacy.salt_file: not set; name the file that keeps the id salt, or set {SALT_ENV}"
        )
    path = Path(salt_file).expanduser()
    if not path.exists():
        _create(path)
    return _read(path), f" ({path})"


def _read(path: Path) -> bytes:
    where = f"privacy.salt_file: {path}"
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{where} is not a file")
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ConfigError(
                f"{where} can be read or written by every user; make it private "
                f"(chmod 600 {path}): the salt is what keeps hashed ids from being guessed"
            )
        text = path.read_bytes().strip()
    except OSError as err:
        raise ConfigError(
            f"{where}: cannot read it ({err.strerror or type(err).__name__})"
        ) from None
    if not text:
        raise ConfigError(
            f"{where} is empty; restore it from its backup, or delete it to make a new salt "
            "(ids hashed before will not match the new hashes)"
        )
    return text


def _create(path: Path) -> None:
    """Write a new salt to `path`, mode 0600, atomically: a private temporary file linked into
    place, so a concurrent first use finds either no file or the whole of one (the first wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SALT_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if the file exists: another process made it first
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
