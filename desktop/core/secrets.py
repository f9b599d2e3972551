"""Secrets in the OS keyring (Windows Credential Manager, macOS Keychain, Secret Service /
KWallet on Linux) through the `keyring` package.

`SecretStore` wraps one keyring backend (the platform's, or one given - the tests use an
in-memory backend of their own). `available()` tells whether a usable backend exists and
which, so the settings dialog can say "no keyring on this PC" instead of failing on save;
a store without a backend refuses to store (`SecretStoreError`) rather than falling back to
a plain file. Entries are keyed per cluster and user: `password_key(settings)`.
"""
from __future__ import annotations

from typing import Any

SERVICE = "machine-monitor"


class SecretStoreError(RuntimeError):
    pass


def password_key(settings: Any) -> str:
    """The keyring entry name of a cluster's SASL password: user @ first bootstrap server."""
    first = (settings.bootstrap_servers.split(",")[0].strip() or "local") if settings.bootstrap_servers else "local"
    return f"kafka-sasl:{settings.sasl_username}@{first}"


class SecretStore:
    def __init__(self, backend: Any | None = None) -> None:
        self._backend = backend

    def _keyring(self) -> Any:
        if self._backend is not None:
            return self._backend
        import keyring

        return keyring.get_keyring()

    def available(self) -> tuple[bool, str]:
        """(usable, what it is) - e.g. (False, "no keyring backend on this PC")."""
        try:
            backend = self._keyring()
        except Exception as exc:  # noqa: BLE001 - a broken keyring setup is "not available", said why
            return False, f"keyring not usable: {exc}"
        name = f"{type(backend).__module__}.{type(backend).__name__}"
        priority = getattr(backend, "priority", 1)
        try:
            priority = float(priority() if callable(priority) else priority)
        except Exception:  # noqa: BLE001 - a backend that cannot say its priority is not usable
            priority = 0
        if "fail" in type(backend).__module__ or priority <= 0:
            return False, "no Secret Service, KWallet, Credential Manager or Keychain found"
        return True, name

    def get(self, key: str) -> str | None:
        usable, _ = self.available()
        if not usable:
            return None
        try:
            return self._keyring().get_password(SERVICE, key)
        except Exception:  # noqa: BLE001 - a locked or broken keyring reads as "no password stored"
            return None

    def set(self, key: str, value: str) -> None:
        usable, why = self.available()
        if not usable:
            raise SecretStoreError(f"cannot be stored safely: {why}; tick \"store the password in the settings file\" "
                                   "to keep it there instead")
        try:
            self._keyring().set_password(SERVICE, key, value)
        except Exception as exc:  # noqa: BLE001 - the message reaches the dialog
            raise SecretStoreError(f"the keyring refused it: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._keyring().delete_password(SERVICE, key)
        except Exception:  # noqa: BLE001 - nothing stored is fine
            pass
