"""``smb://[DOMAIN;]user@host[:port]/share[/path]``: parsing and validation of SMB share URLs.

Used by the server (to refuse a bad URL when the share is added) and by the
proxy (to connect). The password is never part of the URL: it is stored as a
secret and handed to the proxy with the task.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote

DEFAULT_PORT = 445
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")
# characters Windows refuses in a share name (MS-FSCC 2.1.6), plus control characters
_BAD_SHARE = re.compile(r'[\x00-\x1f"/\\\[\]:|<>+=;,*?]')


class SmbUrlError(ValueError):
    """An SMB URL that cannot be used; ``str()`` says what is wrong in one line."""


@dataclass(frozen=True, slots=True)
class SmbUrl:
    """The parts of an SMB share URL (``path`` is ``/``-separated, without leading ``/``)."""

    host: str
    port: int
    share: str
    path: str
    user: str
    domain: str

    @property
    def unc_root(self) -> str:
        r"""``\\host\share[\path]``: the UNC path of the backed-up folder."""
        root = rf"\\{self.host}\{self.share}"
        return root + ("\\" + self.path.replace("/", "\\") if self.path else "")

    @property
    def username(self) -> str:
        """The user name as SMB authentication takes it (``DOMAIN\\user`` with a domain)."""
        return f"{self.domain}\\{self.user}" if self.domain else self.user

    def display(self) -> str:
        """The URL back in canonical form (no password: it never is in the URL)."""
        who = f"{self.domain};{self.user}" if self.domain else self.user
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORT else f":{self.port}"
        tail = f"/{self.path}" if self.path else ""
        return f"smb://{who}@{host}{port}/{self.share}{tail}"


def parse_smb_url(url: str) -> SmbUrl:
    """Parse and validate an ``smb://`` URL; raises ``SmbUrlError`` with a one-line reason."""
    if not url.startswith("smb://"):
        raise SmbUrlError(f"not an SMB URL: {url!r} (expected smb://user@host/share)")
    rest = url[len("smb://") :]
    if "?" in rest or "#" in rest:
        raise SmbUrlError("an SMB URL takes no query or fragment")
    authority, _, tail = rest.partition("/")
    if "@" not in authority:
        raise SmbUrlError("the SMB URL needs a user: smb://[DOMAIN;]user@host[:port]/share[/path]")
    userinfo, _, hostport = authority.rpartition("@")
    if ":" in userinfo:
        raise SmbUrlError("do not put the password in the URL: give it with --password-env VAR")
    domain, _, user = userinfo.rpartition(";")
    domain, user = unquote(domain), unquote(user)
    if not user:
        raise SmbUrlError("the SMB URL has an empty user name")
    host, port = _host_port(hostport)
    parts = [unquote(p) for p in tail.split("/") if p]
    if not parts:
        raise SmbUrlError("the SMB URL names no share: smb://user@host/share[/path]")
    share, path = parts[0], parts[1:]
    if _BAD_SHARE.search(share) or len(share) > 80:
        raise SmbUrlError(f"invalid SMB share name {share!r}")
    for part in path:
        if part in (".", "..") or "\\" in part or "\x00" in part:
            raise SmbUrlError(f"invalid path component {part!r} in the SMB URL")
    return SmbUrl(host, port, share, "/".join(path), user, domain)


def _host_port(hostport: str) -> tuple[str, int]:
    port = DEFAULT_PORT
    if hostport.startswith("["):
        host, _, after = hostport[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SmbUrlError(f"invalid IPv6 address {host!r} in the SMB URL") from None
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise SmbUrlError(f"unexpected {after!r} after the host in the SMB URL")
    else:
        host, sep, port_text_ = hostport.partition(":")
        port_text = port_text_ if sep else None
        if not host or not _HOST.match(host):
            raise SmbUrlError(f"invalid host {host!r} in the SMB URL")
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SmbUrlError(f"invalid port {port_text!r} in the SMB URL")
        port = int(port_text)
    return host, port
