"""A local file of salted password hashes (``smtpd_sasl_type = passwd-file``).

For hosts without Dovecot.  smtpd reads the file named by
``smtpd_sasl_password_file`` (default ``$config_directory/sasl_passwd``);
``postpy passwd add|delete|list`` (:mod:`postpy.cli.passwd_cmd`) writes it.

Format, one user per line::

    # comment
    alice:$scrypt$ln=14,r=8,p=1$<salt>$<hash>

- the username is 1-255 octets of UTF-8 without ``:``, white space or
  control characters; it is matched exactly (case matters);
- the hash is scrypt (RFC 7914) of the UTF-8 password with a random 16-byte
  salt, N = 2**ln, 32 bytes of output; salt and hash in base64 without
  padding.  Parameters are bounded when read (``ln`` <= 20, at most 256 MiB
  of memory), so a bad line cannot exhaust the host;
- blank lines and lines starting with ``#`` are ignored; a malformed line
  is skipped with a warning, a duplicate user keeps the first line.

Permissions: the file holds hashes that an attacker could attack offline,
so it must not be readable or writable by others.  A file with any
permission bit for "other" set is refused as a whole (every login fails
with a temporary error and a warning is logged) until it is fixed.  The
command creates it ``0640 root:<mail_owner's group>`` as root (smtpd reads
it after dropping to mail_owner), ``0600`` otherwise.

Checking is constant-time in the hash comparison, and an unknown user costs
the same scrypt run as a known one, so timing does not reveal which users
exist.  smtpd re-reads the file when its inode, size or mtime changes, so
``postpy passwd`` takes effect at once; when a re-read fails (unreadable
after the privilege drop, outside a chroot) the last good copy is kept.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from postpy.sasl.backend import AuthResult, ClientInfo

SCHEME = "scrypt"
LN, R, P = 14, 8, 1
DKLEN = 32
SALT_BYTES = 16
MAX_LN = 20
MAX_MEMORY = 256 * 1024 * 1024
MAX_USERNAME = 255

_HASH = re.compile(r"^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


class PasswdFileError(Exception):
    """The file cannot be used; str() names it and says why."""


def username_problem(name: str) -> str | None:
    """Why a username cannot be stored, or None when it is fine."""
    if not name:
        return "empty username"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_USERNAME:
        return f"username longer than {MAX_USERNAME} octets"
    if ":" in name:
        return "username contains ':'"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "username contains white space or a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "username is not valid UTF-8"
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, ln: int, r: int, p: int) -> bytes:
    n = 1 << ln
    return hashlib.scrypt(password.encode("utf-8", "surrogateescape"), salt=salt, n=n, r=r, p=p,
                          dklen=DKLEN, maxmem=128 * r * (n + p + 2) + (1 << 20))


def hash_password(password: str, *, ln: int = LN, r: int = R, p: int = P,
                  salt: bytes | None = None) -> str:
    """The stored form of a password, with a fresh random salt."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, ln, r, p)
    return f"${SCHEME}$ln={ln},r={r},p={p}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True)
class StoredHash:
    ln: int
    r: int
    p: int
    salt: bytes
    digest: bytes = field(repr=False)


def parse_hash(encoded: str) -> StoredHash:
    """Decode and bound a stored hash; ValueError says what is wrong."""
    m = _HASH.match(encoded)
    if not m:
        raise ValueError("not a $scrypt$ln=N,r=N,p=N$salt$hash value")
    ln, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not 1 <= ln <= MAX_LN or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"scrypt parameters out of range (ln<={MAX_LN}, r<=32, p<=16)")
    if 128 * r * (1 << ln) > MAX_MEMORY:
        raise ValueError("scrypt parameters need more than 256 MiB")
    try:
        salt, digest = _unb64(m.group(4)), _unb64(m.group(5))
    except (binascii.Error, ValueError):
        raise ValueError("bad base64 in salt or hash") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("salt or hash too short")
    return StoredHash(ln, r, p, salt, digest)


_DUMMY = StoredHash(LN, R, P, b"\x00" * SALT_BYTES, b"\x00" * DKLEN)


def verify_password(password: str, stored: StoredHash | None) -> bool:
    """Constant-time check; ``None`` (no such user) runs a dummy hash and fails."""
    target = stored if stored is not None else _DUMMY
    digest = hashlib.scrypt(password.encode("utf-8", "surrogateescape"), salt=target.salt,
                            n=1 << target.ln, r=target.r, p=target.p, dklen=len(target.digest),
                            maxmem=128 * target.r * ((1 << target.ln) + target.p + 2) + (1 << 20))
    return hmac.compare_digest(digest, target.digest) and stored is not None


# -- the file -------------------------------------------------------------------

@dataclass
class PasswdFile:
    entries: dict[str, str] = field(default_factory=dict)     # user -> stored hash text
    warnings: list[str] = field(default_factory=list)


def parse_text(text: str, path: str = "sasl_passwd") -> PasswdFile:
    result = PasswdFile()
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        problem = username_problem(user) if sep else "need user:hash"
        if problem is None:
            try:
                parse_hash(encoded.strip())
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            result.warnings.append(f"{path}, line {number}: {problem}; line ignored")
            continue
        if user in result.entries:
            result.warnings.append(f"{path}, line {number}: duplicate user {user}; first one kept")
            continue
        result.entries[user] = encoded.strip()
    return result


def format_text(entries: dict[str, str]) -> str:
    head = "# postpy SMTP AUTH users; edit with `postpy passwd`. Format: user:$scrypt$...\n"
    return head + "".join(f"{user}:{encoded}\n" for user, encoded in entries.items())


def check_permissions(st: os.stat_result, path: str) -> None:
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH):
        raise PasswdFileError(f"{path} is accessible by other users (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); refusing to use it: "
                              f"chmod o-rwx {path}")


def read_file(path: str) -> PasswdFile:
    """Read and check the file; PasswdFileError when it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise PasswdFileError(f"password file {path} does not exist "
                              "(create it with `postpy passwd add USER`)") from None
    except OSError as exc:
        raise PasswdFileError(f"open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        check_permissions(os.fstat(fh.fileno()), path)
        data = fh.read()
    return parse_text(data.decode("utf-8", "surrogateescape"), path)


def update_file(path: str, change: Callable[[dict[str, str]], object], *,
                new_gid: int | None = None) -> None:
    """Apply ``change`` to the entries under an exclusive lock and replace the
    file atomically (temporary file, fsync, rename, fsync of the directory).

    An existing file keeps its owner and group, and loses any "other" bits;
    a new one is mode 0640 with group ``new_gid`` when given, else 0600.
    """
    directory = os.path.dirname(os.path.abspath(path))
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)      # one writer at a time; readers never wait
        try:
            st: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            st = None
        current = read_file(path) if st is not None else PasswdFile()
        change(current.entries)
        if st is not None:
            mode, uid, gid = stat.S_IMODE(st.st_mode) & 0o660, st.st_uid, st.st_gid
        else:
            mode = 0o640 if new_gid is not None else 0o600
            uid, gid = os.geteuid(), new_gid if new_gid is not None else os.getegid()
        tmp = f"{path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if os.geteuid() == 0:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.write(fd, format_text(current.entries).encode("utf-8"))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, path)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- the backend ------------------------------------------------------------------

class PasswdFileBackend:
    """Checks passwords against the file; re-reads it when it changes."""

    name = "passwd-file"

    def __init__(self, path: str, *, log_warning: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._key: tuple[int, int, int, int] | None = None
        self._entries: dict[str, str] | None = None
        self._error: str = ""
        self._lock = threading.Lock()      # checks run in worker threads
        if log_warning is None:
            from postpy.util import maillog

            log_warning = maillog.warning
        self._warn = log_warning
        self.refresh()

    def refresh(self) -> None:
        """Load the file if it changed since the last look."""
        try:
            st = os.stat(self.path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)
        except OSError as exc:
            key = (-1, -1, -1, exc.errno or 0)
        if key == self._key:
            return
        self._key = key
        try:
            loaded = read_file(self.path)
        except PasswdFileError as exc:
            refused = "refusing" in str(exc)
            if self._entries is not None and not refused:
                self._warn(f"{exc}; keeping the users read before")
                return
            self._entries, self._error = None, str(exc)
            self._warn(str(exc))
            return
        for text in loaded.warnings:
            self._warn(text)
        self._entries, self._error = loaded.entries, ""

    def lookup(self, username: str) -> StoredHash | None | PasswdFileError:
        with self._lock:
            self.refresh()
            entries, error = self._entries, self._error
        if entries is None:
            return PasswdFileError(error)
        encoded = entries.get(username)
        if encoded is None:
            return None
        try:
            return parse_hash(encoded)
        except ValueError as exc:     # cannot happen after parse_text; be safe
            return PasswdFileError(f"{self.path}: user {username}: {exc}")

    def check(self, username: str, password: str) -> AuthResult:
        """The blocking check (scrypt takes tens of milliseconds)."""
        stored = self.lookup(username)
        if isinstance(stored, PasswdFileError):
            return AuthResult.temporary(str(stored))
        if verify_password(password, stored):
            return AuthResult.success(username)
        return AuthResult.failure("authentication failure")

    async def authenticate(self, username: str, password: str, client: ClientInfo) -> AuthResult:
        import asyncio  # not at the top: `postpy passwd` imports this module too

        # scrypt releases the GIL: run it beside the event loop, not in it.
        return await asyncio.to_thread(self.check, username, password)

    async def close(self) -> None:
        return None
