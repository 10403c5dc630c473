"""deploy/'s balancer configs made runnable on loopback, for the tests and `make cluster`: only the
listen address and the servers change."""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def nginx_config(*, port: int, node_ports: list[int], var_dir: Path) -> str:
    """deploy/nginx/wedsync.conf with its listen on a loopback port and the test's nodes upstream,
    inside the smallest main config that runs it in the foreground."""
    text = (DEPLOY / "nginx" / "wedsync.conf").read_text()
    text, listens = re.subn(r"(?m)^    listen 80;$", f"    listen 127.0.0.1:{port};", text)
    first_server = re.search(r"(?m)^    server 10\.0\.1\.11:8000 (.*);$", text)
    assert first_server is not None and listens == 1, "the shipped config changed: update this test"
    text, servers = re.subn(r"(?m)^    server 10\.0\.1\.\d+:8000 .*;\n", "", text)
    assert servers == 2
    upstream = "".join(f"    server 127.0.0.1:{p} {first_server.group(1)};\n" for p in node_ports)
    text = text.replace("    zone wedsync_nodes 64k;\n", "    zone wedsync_nodes 64k;\n" + upstream, 1)
    temp = {name: var_dir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    (var_dir / "wedsync.conf").write_text(text)
    return (
        "daemon off;\nworker_processes 1;\nuser root;\n"
        f"pid {var_dir / 'nginx.pid'};\nerror_log {var_dir / 'nginx-error.log'} notice;\n"
        "events { worker_connections 1024; }\n"
        "http {\n    access_log off;\n"
        + "".join(f"    {name}_temp_path {path};\n" for name, path in temp.items() if name != "body")
        + f"    client_body_temp_path {temp['body']};\n"
        f"    include {var_dir / 'wedsync.conf'};\n}}\n"
    )
