"""Start pki-server and OpenBao for the differential scripts (hvac_compat.py,
pki_diff.py): both on loopback ports over TLS, in a scratch directory.

pki-server makes its own listener CA with ``--tls-dir`` and keeps its data in a
file store; OpenBao runs ``bao server`` with raft storage (OpenBao 2.x has no
file backend) and a CA + leaf made with the openssl CLI. Each ``start_*``
returns ``(process, url, ca_path)`` once the listener answers HTTP; ``stop``
ends a process started here. Children get an environment without VAULT_*,
BAO_* and AWS_* variables, so nothing from the caller's shell leaks in.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import requests

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], bool], what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}; log:\n{tail(log)}")
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not ready after {START_TIMEOUT_S}s; log:\n{tail(log)}")


def tail(log: Path, n: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


def http_answers(url: str, ca: str) -> bool:
    requests.get(f"{url}/v1/sys/health", verify=ca, timeout=5)
    return True  # any HTTP answer (501/503/200) means the listener is up


def child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAULT_", "BAO_", "AWS_"))
    }
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def start_pki(binary: str, workdir: Path) -> tuple[subprocess.Popen, str, str]:
    d = workdir / "pki"
    (d / "data").mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = d / "server.log"
    tls = d / "tls"
    proc = subprocess.Popen(
        [
            binary,
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--storage",
            f"file:{d / 'data'}",
            "--tls-dir",
            str(tls),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=child_env(),
        start_new_session=True,
    )
    ca = tls / "ca.pem"
    url = f"https://127.0.0.1:{port}"
    try:
        wait_for(lambda: ca.is_file() and ca.stat().st_size > 0, "pki-server ca.pem", proc, log)
        wait_for(lambda: http_answers(url, str(ca)), "pki-server listener", proc, log)
    except Exception:
        stop(proc)
        raise
    return proc, url, str(ca)


def run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")


def make_bao_tls(d: Path, ca_cn: str = "hvac-compat test CA") -> tuple[Path, Path, Path]:
    """Self-signed CA and a leaf for 127.0.0.1/localhost, with the openssl CLI."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        ["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", f"/CN={ca_cn}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        d,
    )
    run(["openssl", "req", "-new", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"], d)
    (d / "leaf.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    run(
        ["openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext"],
        d,
    )
    for f in ("ca.key", "leaf.key"):
        os.chmod(d / f, 0o600)
    return d / "ca.pem", d / "leaf.pem", d / "leaf.key"


def hcl_str(p: Path | str) -> str:
    return json.dumps(str(p))  # a JSON string is a valid HCL string


def start_bao(
    binary: str, workdir: Path, ca_cn: str = "hvac-compat test CA"
) -> tuple[subprocess.Popen, str, str]:
    d = workdir / "bao"
    raft = d / "raft"
    raft.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_bao_tls(d / "tls", ca_cn)
    port, cport = free_port(), free_port()
    while cport == port:
        cport = free_port()
    cfg = d / "config.hcl"
    cfg.write_text(
        f"""storage "raft" {{
  path    = {hcl_str(raft)}
  node_id = "n1"
}}

listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cport}"
  tls_cert_file   = {hcl_str(cert)}
  tls_key_file    = {hcl_str(key)}
}}

api_addr      = "https://127.0.0.1:{port}"
cluster_addr  = "https://127.0.0.1:{cport}"
disable_mlock = true
ui            = false
"""
    )
    log = d / "server.log"
    proc = subprocess.Popen(
        [binary, "server", f"-config={cfg}"],
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=child_env(),
        start_new_session=True,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_answers(url, str(ca)), "openbao listener", proc, log)
    except Exception:
        stop(proc)
        raise
    return proc, url, str(ca)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --------------------------------------------------------------------------
# JSON shapes


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def shape(v: Any) -> Any:
    """Recursive shape: objects map key -> shape, arrays are [shape of first]."""
    if isinstance(v, dict):
        return {k: shape(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return json_type(v)


def shape_type(s: Any) -> str:
    if isinstance(s, dict):
        return "object"
    if isinstance(s, list):
        return "array"
    return s
