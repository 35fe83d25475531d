#!/usr/bin/env bash
# Install the Debian packages named as arguments whose command is missing (package name =
# command name for every package the project asks for). Needs root and apt-get; elsewhere
# it says what is missing and the tests or benchmarks that drive those tools skip.
set -euo pipefail
missing=()
for package in "$@"; do
  command -v "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "not installed (needs root and apt-get): ${missing[*]}; what drives them skips"
fi
