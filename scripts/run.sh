#!/usr/bin/env bash
# The main job in one command: install what is missing, build bt, create a
# repo with sensible defaults if there is none, show the node's identity,
# and run the node's daemon in the foreground (Ctrl-C stops it).
#
#   BT_REPO     repo directory (default ~/.blocktree)
#   BT_NAME     node name for a new repo (default: this host's name)
#   extra arguments go to `bt daemon` (e.g. --listen, --bootstrap, --no-mdns)
#   BT_PASSPHRASE  passphrase for a new root key; without it bt asks on a
#               terminal, and elsewhere stores the root key unsealed (warned)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
mkdir -p bin
go build -o bin/bt ./cmd/bt
bt=bin/bt
repo=${BT_REPO:-$HOME/.blocktree}
export BT_REPO=$repo
if [ ! -f "$repo/config.json" ]; then
	name=${BT_NAME:-$(hostname -s 2>/dev/null || echo node)}
	name=$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '-')
	args=(init --name "$name")
	if [ -z "${BT_PASSPHRASE:-}" ] && [ ! -t 0 ]; then
		echo "run: no terminal and no BT_PASSPHRASE: storing the root key unsealed in $repo/keys (mode 0600)." >&2
		echo "run: to seal it later: bt key export FILE, then keep FILE safe and remove $repo/keys/root.key" >&2
		args+=(--no-passphrase)
	fi
	"$bt" --log-level info "${args[@]}" >/dev/null
fi
"$bt" id
exec "$bt" --log-level "${BT_LOG_LEVEL:-info}" daemon "$@"
