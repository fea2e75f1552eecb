"""The bundled demo targets that ``flamingo demo`` runs against.

An origin with static files and a small JSON API, behind an ``old`` and a ``new`` reverse proxy
that differ in a few planted ways (:data:`DEMO_DIFFERENCES`). Run them with
``python -m flamingo.demo serve`` or, from Python, :func:`start_demo_process` (a child process)
or :func:`running_demo` (this event loop).
"""

from flamingo.demo import servers
from flamingo.demo.servers import *  # noqa: F403 -- the public names are servers.__all__

__all__ = servers.__all__
