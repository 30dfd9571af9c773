"""`python -m service [--host H] [--port P] [--workers N]`: run the scoring service (see `service.main`)."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from service.main import run
from service.settings import ENV_PREFIX, describe_env


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the service; 2 for invalid settings."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the models of a models store over HTTP.",
        epilog="Settings (environment variables):\n" + describe_env(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="interface to listen on (DEEPFM_SERVE_HOST)")
    parser.add_argument("--port", type=int, help="TCP port (DEEPFM_SERVE_PORT)")
    parser.add_argument("--workers", type=int, help="worker processes (DEEPFM_SERVE_WORKERS)")
    args = parser.parse_args(argv)
    try:
        run(args.host, args.port, args.workers)
    except ValidationError as exc:
        problems = [
            f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        ]
        print(f"invalid settings: {'; '.join(problems)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
