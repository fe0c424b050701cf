#!/usr/bin/env python3
"""Compare how the Python Vault client hvac sees pki-server and OpenBao.

Both servers are started on loopback over TLS, then driven through the same
seal-lifecycle sequence with ``hvac.Client``: init status, health before init,
initialise, seal status, unseal with hex and base64 shares, duplicate shares,
reset, full unseal, health (GET and HEAD), seal, health while sealed (with and
without a ``sealedcode`` override), a share from another key set, and shares that
are not shares at all.

For every step the script records the hvac exception class (or None), the HTTP
status of the response and the *shape* of its JSON body (key -> JSON type), plus
the few values that must agree (sealed, initialized, progress, t, n, ...). It
then checks pki-server against OpenBao step by step.

Usage (run with the test venv's python, which has hvac and the bao binary):

    hvac_compat.py --pki-server BIN --bao BIN --workdir DIR

Prints a JSON report on stdout; exits 0 only if every check passes, 1 otherwise,
with every failed check on stderr. Unseal keys and tokens are never printed: the
report holds shapes, and values only for the non-secret keys in COMPARED_VALUES.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import hvac
import hvac.exceptions
import requests

from servers import START_TIMEOUT_S, json_type, shape, shape_type, start_bao, start_pki, stop

PKI = "pki-server"
BAO = "openbao"

REQUEST_TIMEOUT_S = 30.0

# Keys that OpenBao returns and pki-server may leave out. Each entry needs a
# reason; everything else OpenBao returns must be in pki-server's body with the
# same JSON type. Matched with fnmatch against the key name at any depth.
ALLOWED_MISSING: dict[str, str] = {
    # sys/seal-status, sys/unseal: OpenBao renamed Vault's "build_date" to
    # "commit_date"; pki-server sends Vault's "build_date" (Vault clients read that).
    "commit_date": "OpenBao's rename of Vault's build_date",
}

# Body keys whose values (not only types) must be equal on both servers. None of
# them is secret. Strings listed in COMPARED_EMPTINESS are compared only as
# "empty or not" (their values are per-server random).
COMPARED_VALUES = (
    "initialized",
    "sealed",
    "standby",
    "performance_standby",
    "t",
    "n",
    "progress",
    "type",
    "migration",
    "recovery_seal",
    "enterprise",
    # replication_performance_mode is not compared: unsealed OSS Vault reports
    # "disabled" (the contract) while OpenBao 2.7 reports "primary".
    "replication_dr_mode",
)
COMPARED_EMPTINESS = ("nonce",)
# Every share and token seen, so that nothing printed can contain one.
SECRETS: set[str] = set()

# Lists compared by length only (their items are secrets).
COMPARED_LENGTHS = ("keys", "keys_base64", "recovery_keys", "recovery_keys_base64")


# JSON shapes: json_type, shape, shape_type live in servers.py.


def allowed_missing(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pat) for pat in ALLOWED_MISSING)


def compare_shapes(path: str, want: Any, got: Any, out: list[str]) -> None:
    """Every key of `want` (OpenBao) must be in `got` (pki-server) with the same type."""
    wt, gt = shape_type(want), shape_type(got)
    if wt != gt:
        out.append(f"{path or '<body>'}: type {gt} (openbao: {wt})")
        return
    if wt == "object":
        for k, ws in want.items():
            p = f"{path}.{k}" if path else k
            if k not in got:
                if not allowed_missing(k):
                    out.append(f"{p}: missing (openbao: {shape_type(ws)})")
                continue
            compare_shapes(p, ws, got[k], out)
    elif wt == "array" and want and got:
        compare_shapes(f"{path}[0]", want[0], got[0], out)


# --------------------------------------------------------------------------
# Recording one server's answers


@dataclass
class Step:
    name: str
    exception: str | None = None
    status: int | None = None
    content_type: str | None = None
    body_shape: Any = None
    values: dict[str, Any] = field(default_factory=dict)
    result: Any = None  # non-secret return value (booleans)
    errors: list[str] | None = None  # error messages, informational only
    note: str | None = None

    def report(self) -> dict[str, Any]:
        d = {
            "exception": self.exception,
            "status": self.status,
            "content_type": self.content_type,
            "shape": self.body_shape,
            "values": self.values,
        }
        if self.result is not None:
            d["result"] = self.result
        if self.errors is not None:
            d["errors"] = self.errors
        if self.note:
            d["note"] = self.note
        return d


def public_values(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    vals: dict[str, Any] = {}
    for k in COMPARED_VALUES:
        if k in body:
            vals[k] = body[k]
    for k in COMPARED_EMPTINESS:
        if k in body:
            vals[f"{k}_empty"] = body[k] in ("", None)
    for k in COMPARED_LENGTHS:
        if k in body and isinstance(body[k], list):
            vals[f"len({k})"] = len(body[k])
    return vals


class Target:
    """One server under test and the hvac client that talks to it."""

    def __init__(self, name: str, url: str, ca: str):
        self.name = name
        self.url = url
        self.client = hvac.Client(url=url, verify=ca, timeout=REQUEST_TIMEOUT_S)
        self.last: list[requests.Response] = []
        self.client.adapter.session.hooks["response"].append(self._hook)
        self.steps: list[Step] = []
        self.keys: list[str] = []
        self.keys_b64: list[str] = []
        self.root_token: str | None = None
        self.active_after_s: float | None = None

    def redact(self, text: str) -> str:
        """Blank out any secret this run knows of (shares, root tokens), should a
        server ever echo one in an error message."""
        for secret in SECRETS:
            if secret and secret in text:
                text = text.replace(secret, "<redacted>")
        return text

    def _hook(self, r: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.last.append(r)

    def step(
        self,
        name: str,
        fn: Callable[[hvac.Client], Any],
        keep_result: bool = False,
    ) -> Any:
        self.last.clear()
        st = Step(name)
        ret = None
        try:
            ret = fn(self.client)
        except hvac.exceptions.VaultError as e:
            st.exception = type(e).__name__
        except requests.RequestException as e:
            st.exception = type(e).__name__
            st.note = self.redact(str(e))
        except Exception as e:  # e.g. KeyError inside hvac on an unexpected body
            st.exception = type(e).__name__
            st.note = f"hvac raised {type(e).__name__}"
        if self.last:
            r = self.last[-1]
            st.status = r.status_code
            st.content_type = r.headers.get("Content-Type")
            body = None
            if r.content:
                try:
                    body = r.json()
                except ValueError:
                    st.note = (st.note or "") + f"non-JSON body ({len(r.content)} bytes)"
            if body is not None:
                st.body_shape = shape(body)
                st.values = public_values(body)
                if isinstance(body, dict) and isinstance(body.get("errors"), list):
                    st.errors = [self.redact(str(x)) for x in body["errors"]]
        if keep_result:
            st.result = ret
        self.steps.append(st)
        return ret


# --------------------------------------------------------------------------
# The sequence (identical for both servers)


def phase_init(t: Target) -> None:
    t.step("is_initialized", lambda c: c.sys.is_initialized(), keep_result=True)
    t.step("read_init_status", lambda c: c.sys.read_init_status())
    t.step("health_get_uninit", lambda c: c.sys.read_health_status(method="GET"))
    t.step("health_head_uninit", lambda c: c.sys.read_health_status(method="HEAD"))
    t.step("seal_status_uninit", lambda c: c.sys.read_seal_status())
    t.step(
        "unseal_before_init",
        lambda c: c.sys.submit_unseal_key("00" * 33),
    )
    out = t.step(
        "initialize",
        lambda c: c.sys.initialize(secret_shares=5, secret_threshold=3),
    )
    if isinstance(out, dict):
        t.keys = list(out.get("keys") or [])
        t.keys_b64 = list(out.get("keys_base64") or [])
        t.root_token = out.get("root_token")
        SECRETS.update(str(x) for x in (*t.keys, *t.keys_b64, t.root_token) if x)
    t.step("initialize_again", lambda c: c.sys.initialize(secret_shares=5, secret_threshold=3))
    t.step("is_initialized_after", lambda c: c.sys.is_initialized(), keep_result=True)


def wait_active(t: Target) -> None:
    start = time.monotonic()
    while time.monotonic() - start < START_TIMEOUT_S:
        try:
            r = t.client.adapter.get("/v1/sys/health", raise_exception=False)
            if isinstance(r, dict) or getattr(r, "status_code", None) == 200:
                t.active_after_s = round(time.monotonic() - start, 2)
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    t.active_after_s = None  # the health steps will show what it answered


def foreign_share(t: Target, other: Target) -> str:
    """A valid share of the *other* server's key set whose x-coordinate (last
    byte) differs from the shares already given, so it is a wrong share rather
    than a duplicate."""
    used = {bytes.fromhex(k)[-1] for k in t.keys[:2]}
    for k in other.keys:
        if bytes.fromhex(k)[-1] not in used:
            return k
    # Should not happen with 5 shares; fall back to a random share.
    x = next(i for i in range(1, 256) if i not in used)
    return (os.urandom(32) + bytes([x])).hex()


def phase_rest(t: Target, other: Target) -> None:
    if len(t.keys) < 5 or len(t.keys_b64) < 5:
        t.steps.append(Step("abort", note="initialize returned no keys; sequence stopped"))
        return
    k, kb = t.keys, t.keys_b64
    s = t.client.sys
    t.step("seal_status_after_init", lambda c: s.read_seal_status())
    t.step("health_get_sealed_after_init", lambda c: s.read_health_status(method="GET"))
    t.step("unseal_1_hex", lambda c: s.submit_unseal_key(k[0]))
    t.step("unseal_2_base64", lambda c: s.submit_unseal_key(key=kb[1]))
    t.step("unseal_dup_same_encoding", lambda c: s.submit_unseal_key(key=kb[1]))
    t.step("unseal_dup_other_encoding", lambda c: s.submit_unseal_key(key=kb[0]))
    t.step("seal_status_after_dups", lambda c: s.read_seal_status())
    t.step("unseal_reset", lambda c: s.submit_unseal_key(reset=True))
    t.step("seal_status_after_reset", lambda c: s.read_seal_status())
    t.step("unseal_full_1", lambda c: s.submit_unseal_key(k[2]))
    t.step("unseal_full_2", lambda c: s.submit_unseal_key(key=kb[3]))
    t.step("unseal_full_3", lambda c: s.submit_unseal_key(k[4]))
    # OpenBao on raft is a standby (health 429) until it has elected itself
    # leader; wait until each server answers as active before the health steps.
    wait_active(t)
    t.step("is_sealed_unsealed", lambda c: s.is_sealed(), keep_result=True)
    t.step("unseal_when_unsealed", lambda c: s.submit_unseal_key(k[0]))
    t.step("seal_status_unsealed", lambda c: s.read_seal_status())
    t.step("health_get_unsealed", lambda c: s.read_health_status(method="GET"))
    t.step("health_head_unsealed", lambda c: s.read_health_status(method="HEAD"))
    t.step(
        "health_get_unsealed_activecode",
        lambda c: s.read_health_status(active_code=299, method="GET"),
    )
    t.step("seal_without_token", lambda c: s.seal())
    t.client.token = t.root_token
    t.step("seal", lambda c: s.seal())
    t.step("is_sealed_sealed", lambda c: s.is_sealed(), keep_result=True)
    t.step("seal_when_sealed", lambda c: s.seal())
    t.step("health_get_sealed", lambda c: s.read_health_status(method="GET"))
    t.step("health_head_sealed", lambda c: s.read_health_status(method="HEAD"))
    t.step(
        "health_get_sealedcode_299",
        lambda c: s.read_health_status(sealed_code=299, method="GET"),
    )
    t.step(
        "health_head_sealedcode_299",
        lambda c: c.adapter.head(
            "/v1/sys/health", params={"sealedcode": 299}, raise_exception=False
        ),
    )
    t.step(
        "health_get_sealedcode_bad",
        lambda c: c.adapter.get(
            "/v1/sys/health", params={"sealedcode": "abc"}, raise_exception=False
        ),
    )
    t.client.token = None
    # A share from another key set after two good ones: rejected, progress reset.
    wrong = foreign_share(t, other)
    t.step("wrong_share_good_1", lambda c: s.submit_unseal_key(k[0]))
    t.step("wrong_share_good_2", lambda c: s.submit_unseal_key(key=kb[1]))
    t.step("wrong_share_foreign", lambda c: s.submit_unseal_key(wrong))
    t.step("seal_status_after_wrong_share", lambda c: s.read_seal_status())
    # Things that are not shares.
    t.step("unseal_garbage_zz", lambda c: s.submit_unseal_key("zz"))
    t.step("seal_status_after_garbage", lambda c: s.read_seal_status())
    t.step("unseal_1_then_short_key", lambda c: s.submit_unseal_key(k[0]))
    t.step("unseal_short_key", lambda c: s.submit_unseal_key("abcd"))
    t.step("seal_status_after_short_key", lambda c: s.read_seal_status())
    t.step("unseal_reset_final", lambda c: s.submit_unseal_key(reset=True))
    # Still usable: unseal again with three shares.
    t.step("unseal_again_1", lambda c: s.submit_unseal_key(key=kb[4]))
    t.step("unseal_again_2", lambda c: s.submit_unseal_key(k[3]))
    t.step("unseal_again_3", lambda c: s.submit_unseal_key(key=kb[2]))
    t.step("is_sealed_final", lambda c: s.is_sealed(), keep_result=True)


# --------------------------------------------------------------------------
# Comparison


@dataclass
class Check:
    step: str
    what: str
    ok: bool
    detail: str = ""


def compare(pki: Target, bao: Target) -> list[Check]:
    checks: list[Check] = []
    bsteps = {s.name: s for s in bao.steps}
    psteps = {s.name: s for s in pki.steps}
    for name in [s.name for s in bao.steps] + [
        s.name for s in pki.steps if s.name not in bsteps
    ]:
        b, p = bsteps.get(name), psteps.get(name)
        if b is None or p is None:
            checks.append(
                Check(name, "ran", False, f"pki-server ran it: {p is not None}; openbao ran it: {b is not None}")
            )
            continue
        checks.append(
            Check(
                name,
                "exception",
                b.exception == p.exception,
                f"pki-server: {p.exception}; openbao: {b.exception}",
            )
        )
        checks.append(
            Check(name, "status", b.status == p.status, f"pki-server: {p.status}; openbao: {b.status}")
        )
        if b.body_shape is not None or p.body_shape is not None:
            diffs: list[str] = []
            if b.body_shape is None:
                diffs.append(f"openbao sent no JSON body; pki-server sent {shape_type(p.body_shape)}")
            elif p.body_shape is None:
                diffs.append(f"pki-server sent no JSON body; openbao sent {shape_type(b.body_shape)}")
            else:
                compare_shapes("", b.body_shape, p.body_shape, diffs)
            checks.append(Check(name, "shape", not diffs, "; ".join(diffs)))
        vdiffs = []
        for key in sorted(set(b.values) | set(p.values)):
            if key in b.values and key in p.values and b.values[key] != p.values[key]:
                vdiffs.append(f"{key}: pki-server {p.values[key]!r}, openbao {b.values[key]!r}")
            elif key in b.values and key not in p.values and not allowed_missing(key.removesuffix("_empty")):
                vdiffs.append(f"{key}: pki-server <absent>, openbao {b.values[key]!r}")
        if b.values or p.values:
            checks.append(Check(name, "values", not vdiffs, "; ".join(vdiffs)))
        if b.result is not None or p.result is not None:
            checks.append(
                Check(name, "result", b.result == p.result, f"pki-server: {p.result!r}; openbao: {b.result!r}")
            )
        if b.content_type != p.content_type and not (b.status == p.status == 204):
            # hvac only parses errors when Content-Type is exactly application/json;
            # HEAD must carry GET's headers. A 204 has no body, so it is not compared.
            checks.append(
                Check(
                    name,
                    "content_type",
                    False,
                    f"pki-server: {p.content_type!r}; openbao: {b.content_type!r}",
                )
            )
    return checks


# --------------------------------------------------------------------------


def notes(pki: Target, bao: Target) -> list[str]:
    """Differences that are reported but not failed: error message texts."""
    out = []
    bsteps = {s.name: s for s in bao.steps}
    for p in pki.steps:
        b = bsteps.get(p.name)
        if b is not None and (p.errors or b.errors) and p.errors != b.errors:
            out.append(f"{p.name}: errors: pki-server {p.errors!r}; openbao {b.errors!r}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pki-server", required=True, help="pki-server binary")
    ap.add_argument("--bao", required=True, help="bao binary (OpenBao)")
    ap.add_argument("--workdir", required=True, help="scratch directory (made if missing)")
    args = ap.parse_args()

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        pproc, purl, pca = start_pki(args.pki_server, workdir)
        procs.append(pproc)
        bproc, burl, bca = start_bao(args.bao, workdir)
        procs.append(bproc)

        pki = Target(PKI, purl, pca)
        bao = Target(BAO, burl, bca)
        for t in (pki, bao):
            phase_init(t)
        for t, other in ((pki, bao), (bao, pki)):
            phase_rest(t, other)

        checks = compare(pki, bao)
    except KeyboardInterrupt:
        print("hvac_compat: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a server did not start, a tool is missing, ...
        msg = f"{type(e).__name__}: {e}"
        for secret in SECRETS:
            msg = msg.replace(secret, "<redacted>")
        json.dump({"ok": False, "error": msg}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        print(f"hvac_compat: error: {msg}", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            stop(p)

    failed = [c for c in checks if not c.ok]
    info = notes(pki, bao)
    report = {
        "hvac_version": getattr(hvac, "__version__", None) or _dist_version("hvac"),
        "servers": {t.name: {s.name: s.report() for s in t.steps} for t in (pki, bao)},
        "active_after_unseal_s": {t.name: t.active_after_s for t in (pki, bao)},
        "allowed_missing": ALLOWED_MISSING,
        "checks": len(checks),
        "failed": [c.__dict__ for c in failed],
        "notes": info,
        "ok": not failed,
    }
    json.dump(report, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    for n in info:
        print(f"NOTE {n}", file=sys.stderr)
    for c in failed:
        print(f"FAIL {c.step}: {c.what}: {c.detail}", file=sys.stderr)
    print(
        f"hvac_compat: {len(checks) - len(failed)} passed, {len(failed)} failed",
        file=sys.stderr,
    )
    return 0 if not failed else 1


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
