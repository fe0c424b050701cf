#!/usr/bin/env python3
"""Differential test of the PKI paths: the same raw HTTP sequence against
OpenBao and pki-server must give the same status codes and JSON shapes.

Both servers are started on loopback over TLS (servers.py), initialised with
one share and unsealed (set-up only: hvac_compat.py compares those paths).
Then, with the root token, the same requests go to both (``requests``,
``X-Vault-Token``, the LIST verb for lists): mounts and tune, config/urls and
config/crl, root generation (internal EC on pki-a, exported RSA on pki-b,
whose empty LIST certs/roles come first), roles, issue, sign, sign-verbatim,
the raw and JSON fetches, revoke, CRL rotation, tidy, intermediates on pki-c
signed by pki-a (and by pki-b, which has no config/urls), and the deletions;
plus the refusals (400, 404) in between. See ``sequence``.

For every step the script records the status, the Content-Type and the
recursive shape of the JSON body (key -> JSON type, envelope and ``data``),
or for raw answers (``ca``, ``crl``, ...) whether the body is empty. It then
checks, step by step, that:

- the status codes are equal;
- the Content-Types are equal (unless both answered 204);
- every key OpenBao returns (recursively, envelope and ``data``) is in
  pki-server's body with the same JSON type (null counts as a type), except
  the keys in ALLOWED_MISSING; pki-server may send extra keys; objects keyed
  by ids (DYNAMIC_KEYS) are compared by the type of their values;
- a raw answer has a non-empty body on both or on neither;
- the few values in ``values`` agree: ``private_key_type``, whether
  ``revocation_time`` is zero, the length of ``keys`` and whether ``warnings``
  is a list or null;
- a difference listed in ALLOWED_DIFFERENT is a note, not a failure.

Usage (run with the test venv's python, which has hvac/requests and bao):

    pki_diff.py --pki-server BIN --bao BIN --workdir DIR

Prints a JSON report on stdout; exits 0 only if every check passes, 1
otherwise, with every failed check on stderr. Tokens, unseal keys and private
keys are never printed: the report holds shapes and the non-secret values
above; error and warning texts are redacted against every secret seen and
any PEM private key.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from servers import START_TIMEOUT_S, json_type, shape, shape_type, run, start_bao, start_pki, stop

PKI = "pki-server"
BAO = "openbao"

REQUEST_TIMEOUT_S = 60.0

# Keys that OpenBao returns and pki-server deliberately leaves out. Matched
# with fnmatch against "<step>:<dotted path>" (for example
# "mounts_list:data.cubbyhole/"), so each entry names where it applies. Each
# needs a reason; everything else OpenBao returns must be in pki-server's body
# with the same JSON type.
ALLOWED_MISSING: dict[str, str] = {
    # sys/mounts lists every engine. OpenBao has cubbyhole/ and identity/
    # built in; pki-server has neither engine, and serves sys/ without listing
    # it as a mount (its table holds only the mounts an operator made).
    "mounts_list:cubbyhole/": "no cubbyhole engine",
    "mounts_list:data.cubbyhole/": "no cubbyhole engine",
    "mounts_list:identity/": "no identity engine",
    "mounts_list:data.identity/": "no identity engine",
    "mounts_list:sys/": "sys/ is served but not listed as a mount",
    "mounts_list:data.sys/": "sys/ is served but not listed as a mount",
    # Role fields OpenBao added that Vault's API (the contract) does not have;
    # pki-server does not implement them, and a write naming them gets the
    # "Endpoint ignored these unrecognized parameters" warning.
    "role_*:data.allow_globs_in_identity_templates": "OpenBao-only role field",
    "role_*:data.allowed_ip_sans_cidr": "OpenBao-only role field",
    "role_*:data.not_before": "OpenBao-only role field",
    "role_*:data.not_before_bound": "OpenBao-only role field",
    "role_*:data.not_after_bound": "OpenBao-only role field",
    # Multi-issuer detail: a revoked certificate's record names the issuer that
    # signed it. pki-server has one issuer per mount and no stored issuer ids.
    "cert_serial_revoked:data.issuer_id": "one issuer per mount; no issuer ids",
}

# Objects whose keys are ids (compared as maps: only the type of their values).
DYNAMIC_KEYS = ("intermediate_set_signed:data.mapping",)

# Steps whose status (or other check) differs on purpose: "<step>:<check>" ->
# reason. Reported as notes, not failures. Empty: every difference found so
# far was a server fix.
ALLOWED_DIFFERENT: dict[str, str] = {}

# Every token, share and private key seen, so nothing printed can hold one.
SECRETS: set[str] = set()

# A serial no server has issued (for the 404 fetch).
UNKNOWN_SERIAL = "01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13:14"


# JSON shapes: json_type, shape, shape_type live in servers.py.


def allowed(table: dict[str, str], key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pat) for pat in table)


def compare_shapes(step: str, path: str, want: Any, got: Any, out: list[str]) -> None:
    """Every key of `want` (OpenBao) must be in `got` (pki-server) with the same type."""
    wt, gt = shape_type(want), shape_type(got)
    if wt != gt:
        # A null on one side and a value on the other is a type difference too:
        # clients that branch on null see it.
        out.append(f"{path or '<body>'}: type {gt} (openbao: {wt})")
        return
    if wt == "object" and allowed({p: "" for p in DYNAMIC_KEYS}, f"{step}:{path}"):
        wv, gv = list(want.values()), list(got.values())
        if wv and not gv:
            out.append(f"{path}: empty map (openbao: {len(wv)} entries)")
        elif wv and gv:
            compare_shapes(step, f"{path}[*]", wv[0], gv[0], out)
        return
    if wt == "object":
        for k, ws in want.items():
            p = f"{path}.{k}" if path else k
            if k not in got:
                if not allowed(ALLOWED_MISSING, f"{step}:{p}"):
                    out.append(f"{p}: missing (openbao: {shape_type(ws)})")
                continue
            compare_shapes(step, p, ws, got[k], out)
    elif wt == "array" and want and got:
        compare_shapes(step, f"{path}[0]", want[0], got[0], out)


# --------------------------------------------------------------------------
# Recording one server's answers


@dataclass
class Step:
    name: str
    method: str
    path: str
    status: int | None = None
    content_type: str | None = None
    body_shape: Any = None
    raw: bool = False
    raw_nonempty: bool | None = None
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] | None = None
    warnings: list[str] | None = None
    note: str | None = None

    def report(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "request": f"{self.method} {self.path}",
            "status": self.status,
            "content_type": self.content_type,
        }
        if self.raw:
            d["raw_nonempty"] = self.raw_nonempty
        if not self.raw or self.body_shape is not None:
            d["shape"] = self.body_shape
            d["values"] = self.values
        if self.errors is not None:
            d["errors"] = self.errors
        if self.warnings is not None:
            d["warnings"] = self.warnings
        if self.note:
            d["note"] = self.note
        return d


def public_values(body: Any) -> dict[str, Any]:
    """The few non-secret values compared across servers."""
    if not isinstance(body, dict):
        return {}
    vals: dict[str, Any] = {}
    if "warnings" in body:
        vals["warnings"] = json_type(body["warnings"])
    data = body.get("data")
    if isinstance(data, dict):
        if "private_key_type" in data:
            vals["private_key_type"] = data["private_key_type"]
        if "revocation_time" in data and isinstance(data["revocation_time"], (int, float)):
            vals["revocation_time_zero"] = data["revocation_time"] == 0
        if isinstance(data.get("keys"), list):
            vals["len(keys)"] = len(data["keys"])
    return vals


PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S
)


def redact(text: str) -> str:
    """Blank out every secret this run knows of, and any PEM private key."""
    for secret in SECRETS:
        if secret and secret in text:
            text = text.replace(secret, "<redacted>")
    return PEM_PRIVATE_KEY.sub("<redacted private key>", text)


def remember_secrets(body: Any) -> None:
    """Private keys and tokens in a body (any depth) join SECRETS."""
    if isinstance(body, dict):
        for k, v in body.items():
            if k in ("private_key", "root_token", "client_token", "keys", "keys_base64"):
                for s in v if isinstance(v, list) else [v]:
                    if isinstance(s, str) and s:
                        SECRETS.add(s)
            else:
                remember_secrets(v)
    elif isinstance(body, list):
        for v in body:
            remember_secrets(v)


class Target:
    """One server under test and a requests session that talks to it."""

    def __init__(self, name: str, url: str, ca: str):
        self.name = name
        self.url = url
        self.ca = ca
        self.session = requests.Session()
        self.steps: list[Step] = []
        self.token: str | None = None
        self.active_after_s: float | None = None

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        headers = {"X-Vault-Token": self.token} if self.token else {}
        return self.session.request(
            method,
            f"{self.url}/v1/{path}",
            json=body,
            headers=headers,
            # Per request: a Session's own `verify` loses to REQUESTS_CA_BUNDLE.
            verify=self.ca,
            timeout=REQUEST_TIMEOUT_S,
        )

    def step(self, name: str, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        """Send one request, record it, and return the parsed JSON body (or None)."""
        st = Step(name, method, path, raw=raw)
        self.steps.append(st)
        try:
            r = self.call(method, path, body)
        except requests.RequestException as e:
            st.note = redact(f"{type(e).__name__}: {e}")
            return None
        st.status = r.status_code
        st.content_type = r.headers.get("Content-Type")
        if raw and r.status_code < 400:
            st.raw_nonempty = bool(r.content)
            return None
        parsed = None
        if r.content:
            try:
                parsed = r.json()
            except ValueError:
                st.note = f"non-JSON body ({len(r.content)} bytes)"
        if parsed is not None:
            remember_secrets(parsed)
            st.body_shape = shape(parsed)
            st.values = public_values(parsed)
            if isinstance(parsed, dict) and isinstance(parsed.get("errors"), list):
                st.errors = [redact(str(x)) for x in parsed["errors"]]
            if isinstance(parsed, dict) and isinstance(parsed.get("warnings"), list):
                st.warnings = [redact(str(x)) for x in parsed["warnings"]]
        return parsed


def data_of(body: Any) -> dict[str, Any]:
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return body["data"]
    return {}


# --------------------------------------------------------------------------
# Set-up (not compared: hvac_compat.py covers init and unseal)


def init_unseal(t: Target) -> None:
    r = t.call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
    r.raise_for_status()
    out = r.json()
    remember_secrets(out)
    t.token = out["root_token"]
    r = t.call("PUT", "sys/unseal", {"key": out["keys"][0]})
    r.raise_for_status()
    if r.json().get("sealed") is not False:
        raise RuntimeError(f"{t.name}: still sealed after the one share")
    # OpenBao on raft is a standby until it has elected itself leader.
    start = time.monotonic()
    while time.monotonic() - start < START_TIMEOUT_S:
        try:
            if t.call("GET", "sys/health").status_code == 200:
                t.active_after_s = round(time.monotonic() - start, 2)
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{t.name}: not active {START_TIMEOUT_S}s after unseal")


def make_csr(d: Path) -> str:
    """A P-256 CSR for x.example.com (the key stays in the workdir)."""
    d.mkdir(parents=True, exist_ok=True)
    run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "x.key", "-out", "x.csr", "-subj", "/CN=x.example.com",
         "-addext", "subjectAltName=DNS:x.example.com"],
        d,
    )
    return (d / "x.csr").read_text()


# --------------------------------------------------------------------------
# The sequence (identical for both servers)


def sequence(t: Target, csr: str) -> None:
    s = t.step
    # Mounts and tune.
    s("mount_a", "POST", "sys/mounts/pki-a", {"type": "pki", "config": {"max_lease_ttl": "87600h"}})
    s("mounts_list", "GET", "sys/mounts")
    s("mount_a_read", "GET", "sys/mounts/pki-a")
    s("tune_a_read", "GET", "sys/mounts/pki-a/tune")
    s("tune_a_write", "POST", "sys/mounts/pki-a/tune", {"default_lease_ttl": "720h"})
    s("tune_a_read_after", "GET", "sys/mounts/pki-a/tune")

    # Mount configuration.
    s(
        "config_urls_write",
        "POST",
        "pki-a/config/urls",
        {
            "issuing_certificates": ["http://127.0.0.1:8200/v1/pki-a/ca"],
            "crl_distribution_points": ["http://127.0.0.1:8200/v1/pki-a/crl"],
        },
    )
    s("config_urls_read", "GET", "pki-a/config/urls")
    s("config_crl_read", "GET", "pki-a/config/crl")
    s("config_crl_write", "POST", "pki-a/config/crl", {"expiry": "48h"})
    s("config_crl_read_after", "GET", "pki-a/config/crl")

    # Roots: internal EC on pki-a; exported RSA on pki-b (whose empty lists go first).
    s(
        "root_a_generate_internal",
        "POST",
        "pki-a/root/generate/internal",
        {"common_name": "pki-diff root A", "key_type": "ec", "ttl": "87600h"},
    )
    s("mount_b", "POST", "sys/mounts/pki-b", {"type": "pki", "config": {"max_lease_ttl": "87600h"}})
    s("certs_b_list_empty", "LIST", "pki-b/certs")
    s("roles_b_list_empty", "LIST", "pki-b/roles")
    s("ca_b_pem_empty", "GET", "pki-b/ca/pem", raw=True)
    s(
        "root_b_generate_exported",
        "POST",
        "pki-b/root/generate/exported",
        {"common_name": "pki-diff root B", "key_type": "rsa", "key_bits": 2048, "ttl": "8760h"},
    )

    # Roles.
    s(
        "role_write",
        "POST",
        "pki-a/roles/web",
        {"allowed_domains": ["example.com"], "allow_subdomains": True, "key_type": "ec", "max_ttl": "720h"},
    )
    s("role_read", "GET", "pki-a/roles/web")
    s("roles_list", "LIST", "pki-a/roles")
    s("role_bad_ttl_over_max", "POST", "pki-a/roles/bad", {"ttl": "48h", "max_ttl": "24h"})
    s("role_read_unknown", "GET", "pki-a/roles/nope")

    # Issue.
    good = s("issue_good", "POST", "pki-a/issue/web", {"common_name": "a.example.com", "ttl": "24h"})
    serial = data_of(good).get("serial_number") or UNKNOWN_SERIAL
    s("issue_refused_cn", "POST", "pki-a/issue/web", {"common_name": "evil.test"})
    s("issue_ttl_over_max", "POST", "pki-a/issue/web", {"common_name": "b.example.com", "ttl": "2000h"})
    s("issue_unknown_role", "POST", "pki-a/issue/nope", {"common_name": "a.example.com"})

    # Sign.
    s("sign_good", "POST", "pki-a/sign/web", {"csr": csr, "common_name": "x.example.com"})
    s("sign_without_csr", "POST", "pki-a/sign/web", {"common_name": "x.example.com"})
    s("sign_verbatim", "POST", "pki-a/sign-verbatim", {"csr": csr})

    # Fetches: raw, then JSON.
    s("ca_der", "GET", "pki-a/ca", raw=True)
    s("ca_pem", "GET", "pki-a/ca/pem", raw=True)
    s("ca_chain", "GET", "pki-a/ca_chain", raw=True)
    s("crl_der", "GET", "pki-a/crl", raw=True)
    s("crl_pem", "GET", "pki-a/crl/pem", raw=True)
    s("cert_ca", "GET", "pki-a/cert/ca")
    s("cert_serial", "GET", f"pki-a/cert/{serial}")
    s("cert_crl", "GET", "pki-a/cert/crl")
    s("certs_list", "LIST", "pki-a/certs")

    # Revoke, CRL, tidy.
    s("revoke", "POST", "pki-a/revoke", {"serial_number": serial})
    s("revoke_again", "POST", "pki-a/revoke", {"serial_number": serial})
    s("cert_serial_revoked", "GET", f"pki-a/cert/{serial}")
    s("certs_revoked_list", "LIST", "pki-a/certs/revoked")
    s("crl_rotate", "GET", "pki-a/crl/rotate")
    s("crl_der_after_revoke", "GET", "pki-a/crl", raw=True)
    s("tidy", "POST", "pki-a/tidy", {"tidy_cert_store": True, "safety_buffer": "1h"})
    s("cert_unknown_serial", "GET", f"pki-a/cert/{UNKNOWN_SERIAL}")

    # Intermediate on pki-c, signed by pki-a.
    s("mount_c", "POST", "sys/mounts/pki-c", {"type": "pki", "config": {"max_lease_ttl": "87600h"}})
    gen = s(
        "intermediate_generate_internal",
        "POST",
        "pki-c/intermediate/generate/internal",
        {"common_name": "pki-diff intermediate C", "key_type": "ec"},
    )
    signed = s(
        "root_sign_intermediate",
        "POST",
        "pki-a/root/sign-intermediate",
        {"csr": data_of(gen).get("csr", ""), "common_name": "pki-diff intermediate C", "ttl": "8760h"},
    )
    s(
        "intermediate_set_signed",
        "POST",
        "pki-c/intermediate/set-signed",
        {"certificate": data_of(signed).get("certificate", "")},
    )
    s("cert_ca_c", "GET", "pki-c/cert/ca")
    s("certs_c_list", "LIST", "pki-c/certs")
    # sign-intermediate from a mount without config/urls (pki-b): AIA warning.
    gen2 = s(
        "intermediate_generate_exported",
        "POST",
        "pki-c/intermediate/generate/exported",
        {"common_name": "pki-diff intermediate C2", "key_type": "rsa", "key_bits": 2048},
    )
    s(
        "root_b_sign_intermediate",
        "POST",
        "pki-b/root/sign-intermediate",
        {"csr": data_of(gen2).get("csr", ""), "common_name": "pki-diff intermediate C2", "ttl": "720h"},
    )

    # Deletions.
    s("role_delete", "DELETE", "pki-a/roles/web")
    s("role_read_deleted", "GET", "pki-a/roles/web")
    s("unmount_b", "DELETE", "sys/mounts/pki-b")
    s("ca_b_after_unmount", "GET", "pki-b/ca/pem", raw=True)


# --------------------------------------------------------------------------
# Comparison


@dataclass
class Check:
    step: str
    what: str
    ok: bool
    detail: str = ""


def compare(pki: Target, bao: Target) -> tuple[list[Check], list[str]]:
    """Checks, and notes for differences allowed by ALLOWED_DIFFERENT."""
    checks: list[Check] = []
    info: list[str] = []
    bsteps = {s.name: s for s in bao.steps}
    psteps = {s.name: s for s in pki.steps}

    def add(name: str, what: str, ok: bool, detail: str) -> None:
        if not ok and allowed(ALLOWED_DIFFERENT, f"{name}:{what}"):
            info.append(f"{name}: {what} differs (allowed): {detail}")
            ok = True
        checks.append(Check(name, what, ok, detail))

    for name in [s.name for s in bao.steps] + [s.name for s in pki.steps if s.name not in bsteps]:
        b, p = bsteps.get(name), psteps.get(name)
        if b is None or p is None:
            add(name, "ran", False, f"pki-server ran it: {p is not None}; openbao ran it: {b is not None}")
            continue
        if b.note and b.status is None or p.note and p.status is None:
            add(name, "answered", False, f"pki-server: {p.note}; openbao: {b.note}")
            continue
        add(name, "status", b.status == p.status, f"pki-server: {p.status}; openbao: {b.status}")
        if b.content_type != p.content_type and not (b.status == p.status == 204):
            add(name, "content_type", False, f"pki-server: {p.content_type!r}; openbao: {b.content_type!r}")
        if b.raw and b.raw_nonempty is not None or p.raw and p.raw_nonempty is not None:
            add(
                name,
                "raw_body",
                b.raw_nonempty == p.raw_nonempty,
                f"non-empty: pki-server {p.raw_nonempty}; openbao {b.raw_nonempty}",
            )
        if b.body_shape is not None or p.body_shape is not None:
            diffs: list[str] = []
            if b.body_shape is None:
                diffs.append(f"openbao sent no JSON body; pki-server sent {shape_type(p.body_shape)}")
            elif p.body_shape is None:
                diffs.append(f"pki-server sent no JSON body; openbao sent {shape_type(b.body_shape)}")
            else:
                compare_shapes(name, "", b.body_shape, p.body_shape, diffs)
            add(name, "shape", not diffs, "; ".join(diffs))
        vdiffs = []
        for key in sorted(set(b.values) | set(p.values)):
            bv, pv = b.values.get(key, "<absent>"), p.values.get(key, "<absent>")
            if bv != pv:
                vdiffs.append(f"{key}: pki-server {pv!r}, openbao {bv!r}")
        if b.values or p.values:
            add(name, "values", not vdiffs, "; ".join(vdiffs))
        if (p.errors or b.errors) and p.errors != b.errors:
            info.append(f"{name}: errors: pki-server {p.errors!r}; openbao {b.errors!r}")
    return checks, info


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pki-server", required=True, help="pki-server binary")
    ap.add_argument("--bao", required=True, help="bao binary (OpenBao)")
    ap.add_argument("--workdir", required=True, help="scratch directory (made if missing)")
    args = ap.parse_args()

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    started = time.monotonic()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        csr = make_csr(workdir / "csr")
        pproc, purl, pca = start_pki(args.pki_server, workdir)
        procs.append(pproc)
        bproc, burl, bca = start_bao(args.bao, workdir, "pki-diff test CA")
        procs.append(bproc)

        pki = Target(PKI, purl, pca)
        bao = Target(BAO, burl, bca)
        for t in (pki, bao):
            init_unseal(t)
            sequence(t, csr)
        checks, info = compare(pki, bao)
    except KeyboardInterrupt:
        print("pki_diff: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a server did not start, a tool is missing, ...
        msg = redact(f"{type(e).__name__}: {e}")
        json.dump({"ok": False, "error": msg}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        print(f"pki_diff: error: {msg}", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            stop(p)

    failed = [c for c in checks if not c.ok]
    report = {
        "servers": {t.name: {s.name: s.report() for s in t.steps} for t in (pki, bao)},
        "active_after_unseal_s": {t.name: t.active_after_s for t in (pki, bao)},
        "allowed_missing": ALLOWED_MISSING,
        "allowed_different": ALLOWED_DIFFERENT,
        "steps": len(bao.steps),
        "checks": len(checks),
        "failed": [c.__dict__ for c in failed],
        "notes": info,
        "run_time_s": round(time.monotonic() - started, 2),
        "ok": not failed,
    }
    json.dump(report, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    for n in info:
        print(f"NOTE {n}", file=sys.stderr)
    for c in failed:
        print(f"FAIL {c.step}: {c.what}: {c.detail}", file=sys.stderr)
    print(f"pki_diff: {len(checks) - len(failed)} passed, {len(failed)} failed", file=sys.stderr)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
