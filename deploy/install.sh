#!/usr/bin/env bash
# Installs llama-supervisor as a service: a systemd unit on Linux, a launchd agent on macOS.
# The templates next to this script carry @NAME@ placeholders; this script fills them in.
# See --help, docs/deploy-linux.md and docs/deploy-macos.md.
set -euo pipefail
# bash >= 5.2 would read "&" in a ${var//pattern/replacement} as the match; paths are literal.
shopt -u patsub_replacement 2>/dev/null || true

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(dirname "$here")
label=org.llama-supervisor.gateway

usage() {
	cat <<EOF
Usage: deploy/install.sh [options]

Installs the gateway as a service: on Linux a systemd unit (run as root; it also creates the
service user and its directories), on macOS a launchd agent of the current user. An existing
config file is kept; a missing one is made from deploy/config.example.toml. Nothing is started:
the last lines say how.

Options (defaults in brackets; L: Linux, M: macOS):
  --prefix DIR       where llama-supervisor is installed: a checkout after 'make setup', or a
                     virtualenv [the checkout holding this script]
  --bin PATH         the llama-supervisor command [PREFIX/.venv/bin/llama-supervisor, else
                     PREFIX/bin/llama-supervisor]
  --user NAME        L: the service user, created if missing [llama-supervisor]
                     M: must be the current user (an agent runs as its user)
  --config FILE      the TOML settings file [L: /etc/llama-supervisor/config.toml,
                     M: ~/Library/Application Support/llama-supervisor/config.toml]
  --data-dir DIR     the one directory the service writes (sessions) [L: /var/lib/llama-supervisor,
                     M: ~/Library/Application Support/llama-supervisor/data]
  --cache-dir DIR    build_llamacpp.sh's cache, where the gateway finds llama-server
                     [L: /var/cache/llama-supervisor, M: \$LLAMA_SUPERVISOR_CACHE or
                     ~/.cache/llama-supervisor]
  --models-dir DIR   written into a new config file [L: /srv/models,
                     M: ~/Library/Application Support/llama-supervisor/models]
  --log-dir DIR      M: where launchd writes the gateway's output [~/Library/Logs/llama-supervisor]
  --platform NAME    linux or macos [this machine's]
  --destdir DIR      stage the files under DIR (for packaging and tests): no user, no chown, no
                     systemctl
  --dry-run          print what would be done, rendered files included, and change nothing
  -h, --help         show this help
EOF
}

die() {
	echo "install.sh: $*" >&2
	exit 1
}

warn() {
	echo "install.sh: warning: $*" >&2
}

platform='' prefix='' bin='' user='' config='' data_dir='' cache_dir='' models_dir=''
log_dir='' destdir='' dry_run=0

while [ $# -gt 0 ]; do
	arg=$1
	shift
	case $arg in
	--*=*)
		set -- "${arg#*=}" "$@"
		arg=${arg%%=*}
		;;
	esac
	case $arg in
	-h | --help)
		usage
		exit 0
		;;
	--dry-run) dry_run=1 ;;
	--prefix | --bin | --user | --config | --data-dir | --cache-dir | --models-dir | --log-dir | \
		--platform | --destdir)
		if [ $# -eq 0 ] || [ -z "$1" ]; then
			die "$arg needs a value"
		fi
		value=$1
		shift
		case $arg in
		--prefix) prefix=$value ;;
		--bin) bin=$value ;;
		--user) user=$value ;;
		--config) config=$value ;;
		--data-dir) data_dir=$value ;;
		--cache-dir) cache_dir=$value ;;
		--models-dir) models_dir=$value ;;
		--log-dir) log_dir=$value ;;
		--platform) platform=$value ;;
		--destdir) destdir=${value%/} ;;
		esac
		;;
	*) die "unknown option: $arg (see --help)" ;;
	esac
done

if [ -z "$platform" ]; then
	case $(uname -s) in
	Linux) platform=linux ;;
	Darwin) platform=macos ;;
	*) die "unsupported system $(uname -s): pass --platform linux or macos" ;;
	esac
fi

prefix=${prefix:-$checkout}
if [ -z "$bin" ]; then
	bin=$prefix/.venv/bin/llama-supervisor
	if [ ! -x "$bin" ] && [ -x "$prefix/bin/llama-supervisor" ]; then
		bin=$prefix/bin/llama-supervisor
	fi
fi

case $platform in
linux)
	user=${user:-llama-supervisor}
	config=${config:-/etc/llama-supervisor/config.toml}
	data_dir=${data_dir:-/var/lib/llama-supervisor}
	cache_dir=${cache_dir:-/var/cache/llama-supervisor}
	models_dir=${models_dir:-/srv/models}
	service_file=/etc/systemd/system/llama-supervisor.service
	template=$here/systemd/llama-supervisor.service.in
	;;
macos)
	me=$(id -un)
	[ -z "$user" ] || [ "$user" = "$me" ] ||
		die "on macOS the agent runs as the user who installs it: run this as $user"
	user=$me
	support="$HOME/Library/Application Support/llama-supervisor"
	config=${config:-$support/config.toml}
	data_dir=${data_dir:-$support/data}
	cache_dir=${cache_dir:-${LLAMA_SUPERVISOR_CACHE:-$HOME/.cache/llama-supervisor}}
	models_dir=${models_dir:-$support/models}
	log_dir=${log_dir:-$HOME/Library/Logs/llama-supervisor}
	service_file=$HOME/Library/LaunchAgents/$label.plist
	template=$here/launchd/$label.plist.in
	;;
*) die "--platform must be linux or macos, not $platform" ;;
esac

check_path() { # NAME PATH: absolute, and safe to write into a unit file, a plist and TOML
	case $2 in
	/*) ;;
	*) die "$1 must be an absolute path: $2" ;;
	esac
	case $2 in
	*[\"\\]* | *"
"*) die "$1 must not contain quotes, backslashes or newlines: $2" ;;
	esac
	if [ "$platform" = linux ]; then
		case $2 in
		*[!A-Za-z0-9._/+:,-]*) die "$1 must be a plain path (no spaces, %, \$ or the like) for the systemd unit: $2" ;;
		esac
	fi
}
check_path --prefix "$prefix"
check_path --bin "$bin"
check_path --config "$config"
check_path --data-dir "$data_dir"
check_path --cache-dir "$cache_dir"
check_path --models-dir "$models_dir"
[ "$platform" = linux ] || check_path --log-dir "$log_dir"
case $user in
[a-z_]*) ;;
*) die "--user must be a plain user name: $user" ;;
esac
case $user in
*[!a-z0-9_-]*) die "--user must be a plain user name: $user" ;;
esac

staging=0
if [ "$dry_run" = 1 ] || [ -n "$destdir" ]; then
	staging=1
fi
if [ ! -x "$bin" ]; then
	message="$bin is not an executable: run 'make setup' in $prefix first, or pass --bin"
	if [ "$staging" = 1 ]; then warn "$message"; else die "$message"; fi
fi

run() { # a command, or in a dry run its shell-quoted echo
	if [ "$dry_run" = 1 ]; then
		printf '+'
		printf ' %q' "$@"
		printf '\n'
	else
		"$@"
	fi
}

write_file() { # DEST MODE [OWNER GROUP] < content: written whole, or not at all
	local dest=$destdir$1 mode=$2 owner=${3:-} group=${4:-} tmp
	if [ "$dry_run" = 1 ]; then
		echo "+ write $dest (mode $mode${owner:+, owner $owner:$group}):"
		sed 's/^/    /'
		return
	fi
	tmp=$(mktemp "$(dirname "$dest")/.install.XXXXXX")
	cat >"$tmp"
	chmod "$mode" "$tmp"
	if [ -n "$owner" ] && [ -z "$destdir" ]; then
		chown "$owner:$group" "$tmp"
	fi
	mv -f "$tmp" "$dest"
}

make_dir() { # DIR MODE [OWNER GROUP]: an existing directory is left alone unless owned
	if [ -n "${3:-}" ] && [ -z "$destdir" ]; then
		run install -d -m "$2" -o "$3" -g "$4" "$1"
	elif [ ! -d "$destdir$1" ]; then
		run install -d -m "$2" "$destdir$1"
	fi
}

plain() {
	printf '%s' "$1"
}

xml_escape() {
	local text=${1//&/&amp;}
	text=${text//</&lt;}
	printf '%s' "${text//>/&gt;}"
}

render() { # TEMPLATE: the template with every placeholder filled in, on stdout
	local text escape=plain
	[ "$platform" = macos ] && escape=xml_escape
	text=$(cat "$1")
	text=${text//@PREFIX@/$($escape "$prefix")}
	text=${text//@BIN@/$($escape "$bin")}
	text=${text//@USER@/$($escape "$user")}
	text=${text//@GROUP@/$($escape "$group")}
	text=${text//@CONFIG@/$($escape "$config")}
	text=${text//@DATA_DIR@/$($escape "$data_dir")}
	text=${text//@CACHE_DIR@/$($escape "$cache_dir")}
	text=${text//@LOG_DIR@/$($escape "$log_dir")}
	text=${text//@GPU_GROUPS@/$gpu_groups}
	# Without GPU groups on this machine the line would be empty: leave it out.
	printf '%s\n' "$text" | sed '/^SupplementaryGroups=$/d'
}

install_config() { # MODE [OWNER GROUP]: from the example, unless a config is there already
	local text old='models_dirs = ["/srv/models"]' new="models_dirs = [\"$models_dir\"]"
	if [ -e "$destdir$config" ]; then
		echo "keeping the existing $destdir$config"
		return
	fi
	text=$(cat "$here/config.example.toml")
	text=${text/"$old"/$new}
	printf '%s\n' "$text" | write_file "$config" "$@"
}

warn_if_home() { # systemd's ProtectHome=yes hides /home, /root and /run/user
	local path interpreter
	# A virtualenv's python links to the interpreter it was made with (pyenv's lives in a home).
	interpreter=$(readlink -f "$(dirname "$bin")/python" 2>/dev/null || true)
	for path in "$prefix" "$bin" "$interpreter" "$models_dir" "$cache_dir" "$config" "$data_dir"; do
		case $path in
		/home/* | /root/* | /run/user/*)
			warn "$path is under a home directory, which ProtectHome=yes hides from the" \
				"service: keep it under /opt, /usr, /srv or /var (see docs/deploy-linux.md)"
			;;
		esac
	done
}

install_linux() {
	if [ "$staging" = 0 ] && [ "$(id -u)" != 0 ]; then
		die "run as root (or try --dry-run)"
	fi
	warn_if_home
	gpu_groups=''
	local name
	for name in video render; do
		if getent group "$name" >/dev/null 2>&1; then
			gpu_groups=${gpu_groups:+$gpu_groups }$name
		fi
	done
	if id -u "$user" >/dev/null 2>&1; then
		group=$(id -gn "$user")
	else
		group=$user
		if [ -z "$destdir" ]; then
			run useradd --system --user-group --home-dir "$data_dir" --no-create-home \
				--shell /usr/sbin/nologin "$user"
		fi
	fi
	make_dir "$data_dir" 0750 "$user" "$group"
	make_dir "$cache_dir" 0755
	make_dir "$models_dir" 0755
	make_dir "$(dirname "$config")" 0750 root "$group"
	make_dir "$(dirname "$service_file")" 0755
	install_config 0640 root "$group"
	render "$template" | write_file "$service_file" 0644
	# For machines that lend their devices to a gateway elsewhere; not enabled here.
	render "$here/systemd/llama-supervisor-rpc-worker.service.in" |
		write_file "$(dirname "$service_file")/llama-supervisor-rpc-worker.service" 0644
	if [ -z "$destdir" ]; then
		if [ -d /run/systemd/system ]; then
			run systemctl daemon-reload
		else
			warn "systemd is not running here: run 'systemctl daemon-reload' where it is"
		fi
	fi
	cat <<EOF
Installed $destdir$service_file for $bin.
Next: edit $config (models, keys), then
  systemctl enable --now llama-supervisor
  curl http://127.0.0.1:8080/health
  journalctl -u llama-supervisor -f
On a machine that lends its devices to a gateway (docs/rpc-workers.md):
  systemctl enable --now llama-supervisor-rpc-worker
EOF
}

install_macos() {
	if [ "$staging" = 0 ] && [ "$(id -u)" = 0 ]; then
		die "run as the user the agent is for, not as root"
	fi
	group=$(id -gn)
	gpu_groups=''
	local dir
	for dir in "$data_dir" "$log_dir" "$models_dir" "$cache_dir" "$(dirname "$config")" \
		"$(dirname "$service_file")"; do
		run mkdir -p "$destdir$dir"
	done
	install_config 0600
	render "$template" | write_file "$service_file" 0644
	cat <<EOF
Installed $destdir$service_file for $bin.
Next: edit "$config" (models, keys), then
  launchctl bootstrap gui/\$(id -u) "$service_file"
  curl http://127.0.0.1:8080/health
  tail -f "$log_dir/gateway.log"
EOF
}

"install_$platform"
if [ "$dry_run" = 1 ]; then
	echo "(a dry run: nothing was changed)"
fi
