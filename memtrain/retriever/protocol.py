"""What the retrieval server and its clients agree on: the wiki-18 `contents` string, and that a server listens on
loopback only unless asked otherwise. Standard library only; both sides import it, neither imports the other."""

from __future__ import annotations

import ipaddress
import socket

from memtrain.errors import InputError


def format_contents(title: str, text: str) -> str:
    """The wiki-18 `contents` string: the title in double quotes, a newline, then the text."""
    return f'"{title}"\n{text}'


def split_contents(contents: str) -> tuple[str, str]:
    """Inverse of format_contents: (title without its quotes, text).

    Contents without a newline have no title (FlashRAG allows title-less corpora).
    """
    title, newline, text = contents.partition("\n")
    if not newline:
        return "", contents
    if len(title) >= 2 and title.startswith('"') and title.endswith('"'):
        title = title[1:-1]
    return title, text


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse to bind anything but a loopback address unless remote access was asked for explicitly."""
    if allow_remote:
        return
    addresses: list[str] = []
    try:
        addresses = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        if host:
            try:
                addresses = [info[4][0] for info in socket.getaddrinfo(host, None)]
            except socket.gaierror as error:
                raise InputError(f"cannot resolve host {host!r}: {error}", field="host") from error
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise InputError(
            f"host {host!r} is not a loopback address; the retrieval server only listens on "
            "127.0.0.1 unless allow_remote is set",
            field="host",
        )
