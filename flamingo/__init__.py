"""flamingo: an end-to-end differential test harness for HTTP proxies.

One suite, two targets (``old`` and ``new``), one verdict. The pipeline is
``load -> expand -> send -> normalize -> compare -> judge -> report``; only
``send`` touches the network and only ``report`` writes files or the console.
"""

__version__ = "0.1.0"
