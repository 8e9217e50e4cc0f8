"""Who may use the app: the password (never required on the command line), the login guard, the warning.

The password comes from `--auth_file FILE` (one USER:PASSWORD a line), the environment variable
AUTH_ENV, or `--auth USER:PASSWORD` (visible to every local user in `ps`: the other two are safer).
`LoginGuard` checks a login: after each failed try the next answer waits longer (FAIL_DELAYS), and after
MAX_FAILURES failures in a row every login, the right one included, is refused for LOCKOUT_S seconds.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from utils.config.loading import ConfigError

AUTH_ENV = "SAM3_APP_AUTH"
FAIL_DELAYS = (0.5, 1.0, 2.0, 4.0)  # s: the answer to the 1st, 2nd, 3rd, later failed login in a row
MAX_FAILURES = 5  # failed logins in a row before the lockout
LOCKOUT_S = 300.0
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def user_password(text: str, where: str) -> tuple[str, str]:
    """`USER:PASSWORD` as (user, password); both must be non-empty.

    Raises:
        ConfigError: no colon, or an empty user or password (the message names `where` it came from).
    """
    user, _, password = text.strip().partition(":")
    if not user or not password:
        raise ConfigError(f"{where}: expected USER:PASSWORD (a user name, a colon, a password)")
    return user, password


def read_auth(
    flag: str | None, auth_file: str | None, environ: Mapping[str, str] = os.environ
) -> list[tuple[str, str]] | None:
    """The (user, password) pairs of the login, or None (no login asked): `--auth_file`'s lines first,
    else AUTH_ENV, else the `--auth` flag.

    Raises:
        ConfigError: an unreadable or empty file, or a value that is not USER:PASSWORD.
    """
    if auth_file:
        path = Path(auth_file).expanduser()
        try:  # utf-8-sig: a byte-order mark (Windows Notepad) is not part of the first user name
            lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except OSError as err:
            raise ConfigError(f"--auth_file {path}: {err.strerror or err}: give a readable file") from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"--auth_file {path} is not UTF-8 text: write one USER:PASSWORD a line"
            ) from None
        if not lines:
            raise ConfigError(f"--auth_file {path} is empty: write one USER:PASSWORD a line")
        return [user_password(line, f"--auth_file {path}") for line in lines]
    if environ.get(AUTH_ENV):
        return [user_password(environ[AUTH_ENV], f"the environment variable {AUTH_ENV}")]
    if flag:
        return [user_password(flag, "--auth")]
    return None


class LoginGuard:
    """gradio's `auth` callable: the right password, answered later and later after failures, and refused
    for everyone during a lockout. Async, so a waiting answer never holds up the server."""

    def __init__(self, users: Sequence[tuple[str, str]], clock: Callable[[], float] = time.monotonic) -> None:
        self.users = dict(users)
        self.failures = 0
        self.locked_until = 0.0
        self.clock = clock

    def right(self, user: str, password: str) -> bool:
        """Whether (user, password) is one of the pairs (compared in constant time)."""
        if not isinstance(user, str) or not isinstance(password, str):
            return False
        expected = self.users.get(user, "")
        return bool(expected) & hmac.compare_digest(expected.encode(), password.encode())

    async def __call__(self, user: str, password: str) -> bool:
        if self.clock() < self.locked_until:
            await asyncio.sleep(FAIL_DELAYS[-1])
            return False
        if self.right(user, password):
            self.failures = 0
            return True
        self.failures += 1
        delay = FAIL_DELAYS[min(self.failures, len(FAIL_DELAYS)) - 1]
        if self.failures >= MAX_FAILURES:
            self.locked_until = self.clock() + LOCKOUT_S
            self.failures = 0
        await asyncio.sleep(delay)
        return False


def exposure_warning(host: str, share: bool, auth: object) -> str | None:
    """One loud line when the app is reachable from other machines without a password, else None.

    Exposed: `--share` (a public gradio.live link) or `--host` other than the loopback address (0.0.0.0: every
    network interface). Anyone who reaches it can then run SAM 3 on this machine and upload files to it.
    """
    if auth or (host in LOCAL_HOSTS and not share):
        return None
    where = "a public gradio.live link (--share)" if share else f"--host {host}"
    return (
        f"WARNING: the app is open to anyone who can reach {where}, without a password: they can upload "
        f"files and run SAM 3 on this machine; set a login with --auth_file FILE or {AUTH_ENV} (docs/app.md)"
    )
