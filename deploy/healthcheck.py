"""Readiness probe for the container HEALTHCHECK: exit 0 when GET /health/ready answers 200.

python:3.11-slim has no curl or wget, so this uses the standard library only. It asks the port the
replica listens on (DEEPFM_SERVE_PORT, 8000 by default), on the loopback address unless the replica
is bound to one address only (DEEPFM_SERVE_HOST).
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("DEEPFM_SERVE_PORT", "8000")
    host = os.environ.get("DEEPFM_SERVE_HOST", "")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # 503 while the model is loading
        status = exc.code
    except OSError as exc:  # not listening yet, or gone
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
