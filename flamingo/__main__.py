"""``python -m flamingo`` and the ``flamingo`` console script.

The signals are taken first (`flamingo.process.SIGNALS`), before the rest of flamingo and its
libraries are imported (a few hundred milliseconds): a Ctrl-C or SIGTERM in that time is noted
and answered like any other interruption (exit 3, gate.json ``error`` when ``--out`` is given),
never with a KeyboardInterrupt traceback.
"""

import signal
import sys

_early: list[int] = []


def _note_early(signum: int, frame: object) -> None:
    _early.append(signum)


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):  # even flamingo.process takes time to import
        signal.signal(sig, _note_early)
    from flamingo.process import SIGNALS

    SIGNALS.install()  # for the life of the process: never given back
    for signum in _early:
        SIGNALS.note(signum)
    try:
        from flamingo.cli import main as cli_main

        return cli_main()
    finally:
        # The exit code is decided. The interpreter's shutdown puts SIG_DFL back in place of
        # Python handlers, so a late Ctrl-C (the tenth in a row) would still kill the process
        # and turn exit 3 into 130; ignored signals stay ignored.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
