"""The bundled demo targets that ``flamingo demo`` runs against.

An origin with static files and a small JSON API, behind an ``old`` and a ``new`` reverse proxy
that differ in a few planted ways (:data:`DEMO_DIFFERENCES`). Run them with
``python -m flamingo.demo serve`` or, from Python, :func:`start_demo_process` (a child process)
or :func:`running_demo` (this event loop).
"""

from flamingo.demo.servers import (
    DEMO_DIFFERENCES,
    NEW_PROXY,
    OLD_PROXY,
    DemoDifference,
    DemoProcess,
    DemoUrls,
    ProxyPolicy,
    make_origin_app,
    make_proxy_app,
    running_demo,
    serve,
    start_demo_process,
)

__all__ = [
    "DEMO_DIFFERENCES",
    "NEW_PROXY",
    "OLD_PROXY",
    "DemoDifference",
    "DemoProcess",
    "DemoUrls",
    "ProxyPolicy",
    "make_origin_app",
    "make_proxy_app",
    "running_demo",
    "serve",
    "start_demo_process",
]
