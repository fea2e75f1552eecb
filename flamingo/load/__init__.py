"""The ``load`` stage: targets.yaml, suite and accepted-differences files in; validated ``Config``,
``Suite`` and ``AcceptedRule`` records out.

One module per file format over one validation layer:

    module               owns
    load.validate        the cursor ``_At`` (file, key path, line), generic and HTTP-shaped rules,
                         the ``compare:`` rules (shared by targets.yaml and suites)
    load.env             ``${VAR}`` substitution (targets.yaml only); values become secrets
    load.targets         the targets.yaml schema (CONTRACT section 3)
    load.suites          the suite schema, templates, matrix, ids, suite files (CONTRACT section 4)
    load.accepted        the accepted-differences file

``flamingo.yamlload`` parses the bytes into ``YMap``/``YList`` values that know their lines. Nothing
here does network IO or sends anything; each problem is one ``InputError`` printed as
``FILE:LINE: message``.
"""

from flamingo.load.accepted import load_accepted, parse_accepted
from flamingo.load.suites import SUITE_SUFFIXES, find_suite_files, load_suites, parse_suites
from flamingo.load.targets import load_config, parse_config
from flamingo.suite import Suite

__all__ = [
    "SUITE_SUFFIXES",
    "Suite",
    "find_suite_files",
    "load_accepted",
    "load_config",
    "load_suites",
    "parse_accepted",
    "parse_config",
    "parse_suites",
]
