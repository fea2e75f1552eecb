"""``python -m flamingo.demo serve``: run the demo origin and both proxies in one process.

Prints one JSON line with the three base URLs once all of them listen, then serves until SIGTERM
or SIGINT (or, with ``--exit-on-stdin-eof``, until stdin closes) and exits 0. Exits 1, with the
reason on stderr, if a port cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from flamingo.demo.servers import serve


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0 = any free port)")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flamingo.demo", description="The flamingo demo targets."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve origin, old and new until SIGTERM/SIGINT")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--origin-port", type=_port, default=0)
    run.add_argument("--old-port", type=_port, default=18081)
    run.add_argument("--new-port", type=_port, default=18082)
    run.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="also stop when standard input closes (so a child never outlives its parent)",
    )
    run.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="PATH",
        help="the new proxy marks responses to paths starting with PATH as X-Fallback: 1",
    )
    run.add_argument(
        "--leak-bytes",
        type=int,
        default=0,
        metavar="N",
        help="the new proxy keeps N bytes for good after every request (a planted leak)",
    )
    args = parser.parse_args(argv)

    demo = serve(
        args.host,
        args.origin_port,
        args.old_port,
        args.new_port,
        exit_on_stdin_eof=args.exit_on_stdin_eof,
        fallback_paths=tuple(args.fallback),
        leak_bytes=max(0, args.leak_bytes),
    )
    try:
        asyncio.run(demo)
    except OSError as exc:
        print(f"flamingo demo: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
