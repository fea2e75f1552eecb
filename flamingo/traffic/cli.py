"""``flamingo import har|access-log``: the command-line door to `flamingo.traffic`.

Reads the file (bytes: an access log may hold bytes that are not UTF-8), builds the suite, writes
it to ``--out`` (never over an existing file without ``--force``) or stdout, and prints a
one-paragraph summary on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flamingo.errors import InputError
from flamingo.traffic.build import BuildOptions, build_suite
from flamingo.traffic.read import Reading, read_access_log, read_har


def add_import_parser(
    sub: Any, parser_class: type[argparse.ArgumentParser], count: Callable[[str], Any]
) -> None:
    imp = sub.add_parser("import", help="write a suite from recorded traffic (HAR, access log)")
    kinds = imp.add_subparsers(dest="source", required=True, parser_class=parser_class)
    har = kinds.add_parser("har", help="a HAR file (browser DevTools, Playwright)")
    har.add_argument("file", metavar="FILE.har")
    har.add_argument("--suite", required=True, metavar="NAME", help="name of the suite")
    log = kinds.add_parser("access-log", help="an access log (nginx combined, or JSON lines)")
    log.add_argument("file", metavar="FILE")
    log.add_argument("--format", required=True, choices=("combined", "json"), dest="log_format")
    log.add_argument("--suite", metavar="NAME", help="name of the suite (default: the file's name)")
    for p in (har, log):
        p.add_argument("--out", metavar="FILE", help="write the suite here (default: stdout)")
        p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
        p.add_argument("--sample", type=count, metavar="N", help="at most N cases, by template")
        p.add_argument(
            "--include-unsafe",
            action="store_true",
            help="keep side-effecting methods (POST, PUT, PATCH, DELETE, ...)",
        )
        p.add_argument(
            "--host",
            dest="hosts",
            action="append",
            default=[],
            metavar="HOST",
            help="keep requests to HOST[:PORT] (repeatable; default: the most frequent host)",
        )
        p.add_argument(
            "--keep-header",
            dest="keep_headers",
            action="append",
            default=[],
            metavar="NAME",
            help="also keep this request header (repeatable; secrets are never kept)",
        )
        p.add_argument(
            "--no-noise", action="store_true", help="do not write compare: {noise: auto}"
        )


def _read(file: str) -> str:
    try:
        data = Path(file).read_bytes()
    except FileNotFoundError:
        raise InputError("no such file", file) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a file", file) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file) from None
    # A log line with bytes that are not UTF-8 still reads; its target keeps U+FFFD and is
    # left out with a reason rather than sinking the whole file.
    return data.decode("utf-8-sig", "replace")


def _suite_name(args: argparse.Namespace) -> str:
    if args.suite is not None:
        name = str(args.suite)
    else:
        stem = Path(args.file).name.split(".")[0]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "imported"
    import yaml

    from flamingo.load import parse_suites

    probe = yaml.safe_dump({"suite": name, "requests": [{"name": "probe", "path": "/"}]})
    try:
        parse_suites(probe, "--suite")
    except InputError as exc:
        raise InputError(f"--suite: not a usable suite name {name!r}: {exc.message}") from None
    return name


def import_traffic(args: argparse.Namespace) -> int:
    name = _suite_name(args)
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise InputError("is a directory, expected a file to write the suite to", str(out))
    if out is not None and out.exists() and not args.force:
        raise InputError("exists already (use --force to overwrite)", str(out))
    text = _read(args.file)
    reading: Reading
    if args.source == "har":
        reading = read_har(text, args.file)
        source = f"har {Path(args.file).name} --suite {name}"
    else:
        reading = read_access_log(text, args.file, args.log_format)
        source = f"access-log {Path(args.file).name} --format {args.log_format}"
    if args.sample is not None:
        source += f" --sample {args.sample}"
    if args.include_unsafe:
        source += " --include-unsafe"
    options = BuildOptions(
        suite=name,
        include_unsafe=args.include_unsafe,
        sample=args.sample,
        hosts=tuple(args.hosts),
        keep_headers=tuple(args.keep_headers),
        noise=not args.no_noise,
        source=source,
    )
    imported = build_suite(reading.observed, options, args.file)
    if out is None:
        sys.stdout.write(imported.text)
    else:
        if out.parent != Path():
            out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(imported.text, encoding="utf-8")
        os.replace(tmp, out)  # never a half-written suite
    skipped = sum(count for _, count in reading.skipped)
    print(
        f"imported {imported.read} requests ({skipped} unreadable lines/entries skipped): "
        f"{imported.distinct} distinct, {imported.templates} templates, {imported.cases} cases"
        + (f" -> {out}" if out is not None else ""),
        file=sys.stderr,
    )
    for reason, count in reading.skipped:
        print(f"  skipped {count} x {reason}", file=sys.stderr)
    for reason, count in imported.left_out:
        print(f"  left out {count} x {reason}", file=sys.stderr)
    for what, count in imported.secrets:
        print(f"  dropped {what} ({count} requests)", file=sys.stderr)
    return 0
