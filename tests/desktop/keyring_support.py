"""Keyring backends for tests: one in memory (a real `keyring` backend class, registered the
way a plugin is, so the product's code goes through the package's API), and one that has no
place to keep secrets, like a Linux PC without Secret Service or KWallet."""
from __future__ import annotations

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class MemoryKeyring(KeyringBackend):
    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


class NoKeyring(KeyringBackend):
    """Stands for keyring's fail backend: nothing can be stored."""

    priority = 0

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        raise RuntimeError("no recommended backend was available")

    def delete_password(self, service: str, username: str) -> None:
        raise PasswordDeleteError(username)
