"""The nginx front of the production web tier (README "Running in production").

``./gw serve`` and the benchmarks render ``deploy/nginx.conf.template`` through this module:

    python -m gunwatch.serving nginx-conf --var-dir var --host 127.0.0.1 --port 8000

prints the path of the written config. nginx then listens on host:port and proxies websockets
(``/ws/``) to ``<var>/run/asgi.sock`` and everything else to ``<var>/run/wsgi.sock``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf.template"


def nginx_conf(var_dir: Path, host: str, port: int, static_root: Path | None = None) -> Path:
    """Write ``<var>/nginx/nginx.conf`` for host:port (and make its folders); return its path.

    ``static_root`` defaults to the settings' STATIC_ROOT (collectstatic's output)."""
    if static_root is None:
        from django.conf import settings

        static_root = Path(settings.STATIC_ROOT)
    nginx_dir, run_dir = var_dir / "nginx", var_dir / "run"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "NGINX_DIR": str(nginx_dir.resolve()),
        "RUN_DIR": str(run_dir.resolve()),
        "HOST": host,
        "PORT": str(port),
        "STATIC_ROOT": str(static_root.resolve()),
        # Started as root, nginx's workers would run as nobody, who may not reach the sockets.
        "USER_LINE": "user root;" if os.geteuid() == 0 else "",
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    conf = nginx_dir / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_command(conf: Path) -> list[str]:
    """nginx in the foreground on ``conf``, its logs and temporary files beside it."""
    return ["nginx", "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf), "-g", "daemon off;"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the nginx config of ./gw serve")
    parser.add_argument("what", choices=["nginx-conf"])
    parser.add_argument("--var-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gunwatch.settings")
    print(nginx_conf(args.var_dir, args.host, args.port))


if __name__ == "__main__":
    main()
