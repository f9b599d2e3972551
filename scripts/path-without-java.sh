#!/usr/bin/env bash
# Prints a PATH with every command of the current PATH except Java's and Maven's (java*,
# jshell, keytool, mvn*), so the installed app can be checked as on a PC without either:
#
#   env -u JAVA_HOME PATH="$(scripts/path-without-java.sh DIR)" dist/MachineMonitor/MachineMonitor --self-test
#
# DIR is made (emptied first) and filled with links to the commands that stay.
set -euo pipefail
dir="${1:?usage: path-without-java.sh DIR}"
rm -rf "$dir"
mkdir -p "$dir"
IFS=: read -r -a entries <<< "$PATH"
for entry in "${entries[@]}"; do
  [ -d "$entry" ] || continue
  for command in "$entry"/*; do
    name="$(basename "$command")"
    case "$name" in java*|jshell|keytool|jar|jlink|mvn*) continue ;; esac
    # The first one on PATH wins, as in the shell.
    [ -x "$command" ] && [ ! -d "$command" ] && [ ! -e "$dir/$name" ] && ln -s "$command" "$dir/$name"
  done
done
if PATH="$dir" command -v java >/dev/null 2>&1 || PATH="$dir" command -v mvn >/dev/null 2>&1; then
  echo "error: java or mvn is still reachable through $dir" >&2
  exit 1
fi
echo "$dir"
