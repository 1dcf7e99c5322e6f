"""Which Kubernetes API to talk to, and with what credentials.

Sources, in the order they are tried (`find_cluster_config`):

1. `--kubeconfig PATH` (explicit: a problem with it is an error the user sees at start);
2. the `KUBECONFIG` environment variable: the first existing file of its `:`-separated list
   (kubectl merges the files; kshark uses one, which covers the common single-file case);
3. in-cluster: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` set and the service account
   token mounted at /var/run/secrets/kubernetes.io/serviceaccount — nothing to configure in a pod.

None of them: no cluster (resolution stays off, entries keep empty names). ~/.kube/config is
not read unless named: a worker started by hand on a laptop should not quietly start watching
whatever cluster the user last used.

From a kubeconfig, the current context's cluster and user are used: `server`,
`certificate-authority[-data]`, `insecure-skip-tls-verify`, `tls-server-name`; `token`,
`tokenFile`, `client-certificate[-data]` + `client-key[-data]`, `username`/`password`.
`exec` and `auth-provider` plugins run programs or talk to identity providers: not supported, and
said so (a token or a client certificate works everywhere).

A token file (in-cluster tokens are rotated by the kubelet, about hourly) is re-read at most every
TOKEN_REREAD_SECONDS, so a long-running watcher keeps authenticating.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# How long a token read from a file is used before the file is read again.
TOKEN_REREAD_SECONDS = 60.0


class KubeConfigError(Exception):
    """A kubeconfig (or the in-cluster setup) kshark cannot use; str() is one line for users."""


@dataclass
class ClusterConfig:
    """Everything needed to reach one API server."""

    server: str  # "https://host:port", no trailing slash
    source: (
        str  # what it came from, for /status and logs: "kubeconfig /p (context c)", "in-cluster"
    )
    ca_data: bytes | None = None  # PEM
    ca_file: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    token: str | None = None
    token_file: str | None = None
    cert_data: bytes | None = None  # client certificate, PEM
    key_data: bytes | None = None
    basic_auth: tuple[str, str] | None = None
    namespace: str = "default"  # the context's (or the pod's) namespace
    _token_cache: tuple[float, str] | None = field(default=None, repr=False)

    def bearer_token(self) -> str | None:
        """The token to send now (a token file is re-read every TOKEN_REREAD_SECONDS)."""
        if self.token_file is None:
            return self.token
        now = time.monotonic()
        cached = self._token_cache
        if cached is not None and now - cached[0] < TOKEN_REREAD_SECONDS:
            return cached[1]
        try:
            token = Path(self.token_file).read_text().strip()
        except OSError:
            # Keep the last one: the kubelet replaces the file by a symlink swap, and a read
            # that races it should not cost a request.
            return cached[1] if cached is not None else self.token
        self._token_cache = (now, token)
        return token

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS settings: the cluster's CA (or none checked when insecure), a client
        certificate when the user has one."""
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data is not None:
            ctx = ssl.create_default_context(cadata=self.ca_data.decode("ascii", "replace"))
        elif self.ca_file is not None:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        else:
            ctx = ssl.create_default_context()
        if self.cert_data is not None and self.key_data is not None:
            # ssl loads a certificate chain only from files: a private temporary directory,
            # removed as soon as the context holds them.
            with tempfile.TemporaryDirectory(prefix="kshark-kube-") as tmp:
                cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
                for path, data in ((cert, self.cert_data), (key, self.key_data)):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                ctx.load_cert_chain(str(cert), str(key))
        return ctx


def _read_bytes(path: str, base: Path, what: str) -> bytes:
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = base / p  # relative paths in a kubeconfig are relative to the file
    try:
        return p.read_bytes()
    except OSError as exc:
        raise KubeConfigError(f"{what} {p}: {exc.strerror or exc}") from None


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=False)
    except (binascii.Error, ValueError):
        raise KubeConfigError(f"{what} is not base64") from None


def _named(items: Any, name: str, kind: str, path: Path) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(kind)
            return body if isinstance(body, dict) else {}
    raise KubeConfigError(f"{path}: no {kind} named {name!r}")


def load_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> ClusterConfig:
    """The cluster and credentials of `context` (default: current-context) in a kubeconfig."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as exc:
        raise KubeConfigError(f"kubeconfig {p}: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if isinstance(line, int) else ""
        raise KubeConfigError(f"kubeconfig {p}: not YAML{where}") from None
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {p}: not a kubeconfig (no mapping at the top)")
    name = context or doc.get("current-context")
    if not name:
        raise KubeConfigError(f"kubeconfig {p}: no current-context")
    ctx = _named(doc.get("contexts"), str(name), "context", p)
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if not cluster_name:
        raise KubeConfigError(f"kubeconfig {p}: context {name!r} names no cluster")
    cluster = _named(doc.get("clusters"), str(cluster_name), "cluster", p)
    user = _named(doc.get("users"), str(user_name), "user", p) if user_name else {}
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise KubeConfigError(f"kubeconfig {p}: cluster {cluster_name!r} has no https:// server")
    base = p.parent
    cfg = ClusterConfig(
        server=server,
        source=f"kubeconfig {p} (context {name})",
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name") or None,
        namespace=str(ctx.get("namespace") or "default"),
    )
    if cluster.get("certificate-authority-data"):
        cfg.ca_data = _b64(cluster["certificate-authority-data"], "certificate-authority-data")
    elif cluster.get("certificate-authority"):
        cfg.ca_data = _read_bytes(cluster["certificate-authority"], base, "certificate-authority")
    if "exec" in user or "auth-provider" in user:
        plugin = "exec" if "exec" in user else "auth-provider"
        raise KubeConfigError(
            f"kubeconfig {p}: user {user_name!r} authenticates with an {plugin} plugin, which "
            "kshark does not run; give it a user with a token or a client certificate"
        )
    if user.get("token"):
        cfg.token = str(user["token"])
    elif user.get("tokenFile"):
        tf = Path(str(user["tokenFile"])).expanduser()
        cfg.token_file = str(tf if tf.is_absolute() else base / tf)
        _read_bytes(cfg.token_file, base, "tokenFile")  # fail now, not at the first request
    if user.get("client-certificate-data"):
        cfg.cert_data = _b64(user["client-certificate-data"], "client-certificate-data")
    elif user.get("client-certificate"):
        cfg.cert_data = _read_bytes(user["client-certificate"], base, "client-certificate")
    if user.get("client-key-data"):
        cfg.key_data = _b64(user["client-key-data"], "client-key-data")
    elif user.get("client-key"):
        cfg.key_data = _read_bytes(user["client-key"], base, "client-key")
    if (cfg.cert_data is None) != (cfg.key_data is None):
        raise KubeConfigError(
            f"kubeconfig {p}: a client certificate needs its key, and a key its certificate"
        )
    if user.get("username") and user.get("password"):
        cfg.basic_auth = (str(user["username"]), str(user["password"]))
    try:
        cfg.ssl_context()  # a bad CA or certificate: said now, once, with the file named
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise KubeConfigError(f"kubeconfig {p}: TLS settings not usable: {exc}") from None
    return cfg


def in_cluster_config(
    environ: Mapping[str, str], sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> ClusterConfig | None:
    """The pod's own service account, when running in a pod that has one mounted."""
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    token = sa_dir / "token"
    if not host or not port or not token.exists():
        return None
    if ":" in host:
        host = f"[{host}]"
    ca = sa_dir / "ca.crt"
    try:
        namespace = (sa_dir / "namespace").read_text().strip() or "default"
    except OSError:
        namespace = "default"
    cfg = ClusterConfig(
        server=f"https://{host}:{port}",
        source="in-cluster service account",
        ca_data=ca.read_bytes() if ca.exists() else None,
        token_file=str(token),
        namespace=namespace,
    )
    try:
        cfg.ssl_context()
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise KubeConfigError(f"in-cluster CA {ca}: not usable: {exc}") from None
    return cfg


def find_cluster_config(
    kubeconfig: str | None, environ: Mapping[str, str], sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> ClusterConfig | None:
    """The cluster to use: `--kubeconfig`, else `KUBECONFIG`, else in-cluster, else None.
    KubeConfigError when the one chosen cannot be used."""
    if kubeconfig:
        return load_kubeconfig(kubeconfig)
    listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        for path in listed:
            if Path(path).expanduser().exists():
                return load_kubeconfig(path)
        raise KubeConfigError(f"KUBECONFIG={environ['KUBECONFIG']}: no such file")
    return in_cluster_config(environ, sa_dir)
