#!/usr/bin/env bash
# Installs what Blocktree's daemon and tests need and are missing: swtpm
# (a software TPM for tests) and fuse3. Debian/Ubuntu, as root or via sudo.
# Safe to run again: it does nothing when everything is there.
set -euo pipefail

need=()
command -v swtpm >/dev/null 2>&1 || need+=(swtpm)
command -v swtpm_setup >/dev/null 2>&1 || need+=(swtpm-tools)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if ! command -v go >/dev/null 2>&1; then
	echo "setup: Go is not installed; install Go 1.26 or newer from your distribution or go.dev" >&2
	exit 1
fi
[ ${#need[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "setup: need root to install: ${need[*]} (run as root or install sudo)" >&2
		exit 1
	fi
	sudo=(sudo)
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "setup: no apt-get; install these yourself: ${need[*]}" >&2
	exit 1
fi
echo "setup: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
