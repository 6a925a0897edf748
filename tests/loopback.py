"""What the e2e and benchmark suites share: ports for the processes they start
on loopback, fresh PostgreSQL databases, and nginx as a reverse proxy."""

import os
import random
import secrets
import socket
from pathlib import Path

PG_ADMIN_URL = os.environ.get("SWITCHBOARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """A port below the kernel's ephemeral range: binding port 0 (the mocks)
    and outgoing connections take ephemeral ports, and could take this one
    between our check and the server's bind."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def postgres_database(prefix: str) -> tuple[str, str]:
    """A fresh, empty database: (name, URL). Raises psycopg.OperationalError
    when PostgreSQL does not answer."""
    import psycopg

    name = prefix + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def drop_postgres_database(name: str):
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def nginx_conf(root: Path, port: int, upstream: str, location: str = "", workers: int = 2,
               connections: int = 4096) -> Path:
    """nginx.conf, written in `root`, for nginx as a reverse proxy on 127.0.0.1:`port`: `upstream` is the
    body of its upstream block (servers, keep-alive), `location` more proxy settings. Keep-alive to the
    upstream, no buffering; everything nginx writes stays under `root`."""
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(f"""
{user}
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream up {{
{upstream}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
{location}
    }}
  }}
}}
""")
    return conf
