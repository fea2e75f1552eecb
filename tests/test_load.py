"""Tests of the load stage: targets.yaml, suites, YAML handling and the bad-input corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flamingo.errors import InputError
from flamingo.load import load_config, load_suites, parse_config, parse_suites
from flamingo.model import GateThresholds, RunSettings
from flamingo.suite import ExpectSpec, HeaderExpectSpec, RequestSpec
from flamingo.yamlload import YList, YMap, parse_document

BAD_INPUT = Path(__file__).parent / "bad_input"

# The two examples of CONTRACT.md sections 3 and 4, copied verbatim: they must load as written.
CONTRACT = Path(__file__).parent / "contract"
CONTRACT_TARGETS = (CONTRACT / "targets.yaml").read_text()
CONTRACT_SUITE = (CONTRACT / "suite.yaml").read_text()

MINIMAL_TARGETS = """\
targets:
  old: {base_url: "http://old.example"}
  new: {base_url: "http://new.example"}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(call: object, *args: object, **kwargs: object) -> InputError:
    assert callable(call)
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------------------------
# The bad-input corpus: every file states its exact error on its first line
# --------------------------------------------------------------------------------------------


def _corpus() -> list[Path]:
    return sorted(p for p in BAD_INPUT.iterdir() if p.name.startswith(("suite_", "targets_")))


def _expected(path: Path) -> str:
    """``str(error)`` that the corpus entry announces on its first line."""
    first = path / "a.yaml" if path.is_dir() else path
    line = first.read_bytes().split(b"\n", 1)[0].decode()
    assert line.startswith("# expect: "), f"{first} does not start with '# expect: '"
    expected = line.removeprefix("# expect: ")
    # {file} and {dir} stand for the corpus entry's path, which differs between checkouts.
    if path.is_dir():  # "FILE:LINE: message" with FILE relative to the directory
        return f"{path}/{expected}".replace("{dir}", str(path))
    return f"{path}:{expected}".replace("{file}", str(path))


def test_corpus_is_big_enough() -> None:
    entries = _corpus()
    assert len(entries) >= 40
    assert any(p.name.startswith("targets_") for p in entries)
    assert any(p.is_dir() for p in entries)


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_bad_input(path: Path) -> None:
    if path.name.startswith("targets_"):
        error = error_of(load_config, str(path), env={})
    else:
        error = error_of(load_suites, [str(path)])
    assert str(error) == _expected(path)
    assert error.file is not None and error.line is not None and error.line >= 1


# --------------------------------------------------------------------------------------------
# targets.yaml
# --------------------------------------------------------------------------------------------


def test_contract_targets_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "targets.yaml", CONTRACT_TARGETS)
    config = load_config(path, env={"NEW_TOKEN": "s3cr3t"})
    assert config.path == str(path)
    assert config.old.name == "old" and config.old.base_url == "http://127.0.0.1:18081"
    assert config.old.headers == () and config.old.verify_tls is True
    assert config.new.base_url == "http://127.0.0.1:18082"
    assert config.new.headers == (("Authorization", "Bearer s3cr3t"),)
    assert config.run == RunSettings(concurrency=200, rate_limit=0.0, timeout=10.0, retries=1)
    assert config.default_gate == GateThresholds(0.999, 0.001, 1, 1.25, 1.5)
    assert config.gate("canary") == GateThresholds(0.99, 0.001, 1, 1.25, 1.5)
    assert config.gate("global") == GateThresholds(1.0, 0.0, 1, 1.25, 1.5)
    assert config.gate(None) is config.default_gate
    assert [name for name, _ in config.stages] == ["canary", "global"]
    assert config.secrets == ("s3cr3t",)


def test_minimal_targets_defaults() -> None:
    config = parse_config(MINIMAL_TARGETS, "t.yaml", env={})
    assert config.run == RunSettings()
    assert config.default_gate == GateThresholds(min_cases=1)
    assert config.stages == ()
    assert config.secrets == ()


def test_target_extensions_and_trailing_slash() -> None:
    text = """\
targets:
  old: {base_url: "https://old.example:8443/prefix/", production: true, verify_tls: false}
  new: {base_url: "http://new.example/", http2: true, headers: {X-Retries: 3}}
"""
    config = parse_config(text, "t.yaml", env={})
    assert config.old.base_url == "https://old.example:8443/prefix"
    assert config.old.production is True and config.old.verify_tls is False
    assert config.new.base_url == "http://new.example"
    assert config.new.http2 is True
    assert config.new.headers == (("X-Retries", "3"),)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("250ms", 0.25), ("10s", 10.0), ("2m", 120.0), ("1.5s", 1.5), ("3", 3.0), ("0.5", 0.5)],
)
def test_durations(written: str, seconds: float) -> None:
    config = parse_config(MINIMAL_TARGETS + f"run: {{timeout: {written}}}\n", "t.yaml", env={})
    assert config.run.timeout == seconds


@pytest.mark.parametrize(
    ("written", "size"),
    [("1024", 1024), ("10MB", 10_000_000), ("512KiB", 524288), ("1GiB", 2**30), ("2kb", 2000)],
)
def test_sizes(written: str, size: int) -> None:
    text = MINIMAL_TARGETS + f"run: {{max_body_bytes: {written}}}\n"
    assert parse_config(text, "t.yaml", env={}).run.max_body_bytes == size


def test_run_extensions() -> None:
    text = MINIMAL_TARGETS + "run: {max_cases: 50, max_requests: 0, rate_limit: 2.5}\n"
    run = parse_config(text, "t.yaml", env={}).run
    assert (run.max_cases, run.max_requests, run.rate_limit) == (50, 0, 2.5)


@pytest.mark.parametrize(("written", "workers"), [("auto", 0), ("3", 3), ("1", 1)])
def test_run_workers(written: str, workers: int) -> None:
    """``auto`` is stored as 0 (flamingo.workers.plan decides); the default is auto."""
    text = MINIMAL_TARGETS + f"run: {{workers: {written}}}\n"
    assert parse_config(text, "t.yaml", env={}).run.workers == workers
    assert parse_config(MINIMAL_TARGETS, "t.yaml", env={}).run.workers == 0


def test_gates_partial_default_keeps_fail_closed_defaults() -> None:
    text = (
        MINIMAL_TARGETS
        + """\
gates:
  default: {max_error_rate: 0.01, max_latency_ratio_p50: 2}
  stages:
    canary: {min_match_rate: 0.9}
    relaxed: {max_latency_ratio_p50: null, min_cases: 0}
"""
    )
    config = parse_config(text, "t.yaml", env={})
    # Keys not set keep the fail-closed defaults (1.0, 0, 1); a stage inherits the default's.
    assert config.default_gate == GateThresholds(1.0, 0.01, 1, 2.0, None)
    assert config.gate("canary") == GateThresholds(0.9, 0.01, 1, 2.0, None)
    assert config.gate("relaxed") == GateThresholds(1.0, 0.01, 0, None, None)


@pytest.mark.parametrize("key", ["min_match_rate", "max_error_rate", "min_cases"])
def test_gates_null_cannot_switch_off_a_fail_closed_check(key: str) -> None:
    text = MINIMAL_TARGETS + f"gates:\n  stages:\n    loose:\n      {key}: null\n"
    with pytest.raises(InputError) as info:
        parse_config(text, "t.yaml", env={})
    assert str(info.value).startswith(f"t.yaml:{text.count(chr(10))}: ")
    assert "gates fail closed" in str(info.value)


def test_env_substitution_forms() -> None:
    text = """\
targets:
  old:
    base_url: "http://${OLD_HOST:-127.0.0.1}:18081"
    headers: {X-Literal: "$${NOT_A_VAR}", X-Empty: "${EMPTY:-fallback}"}
  new:
    base_url: "${NEW_URL}"
    headers: {Authorization: "Bearer ${TOKEN}"}
run:
  concurrency: ${CONC}
"""
    env = {"NEW_URL": "https://new.example/", "TOKEN": "t0k", "CONC": "7", "EMPTY": ""}
    config = parse_config(text, "t.yaml", env=env)
    assert config.old.base_url == "http://127.0.0.1:18081"
    assert config.old.headers == (("X-Literal", "${NOT_A_VAR}"), ("X-Empty", "fallback"))
    assert config.new.base_url == "https://new.example"
    assert config.new.headers == (("Authorization", "Bearer t0k"),)
    assert config.run.concurrency == 7  # a whole ${VAR} may be read as a number
    assert config.secrets == ("https://new.example/", "t0k", "7")  # defaults are not secrets


def test_env_values_never_appear_in_messages() -> None:
    text = MINIMAL_TARGETS.replace('"http://new.example"', '"${NEW_URL}"')
    error = error_of(parse_config, text, "t.yaml", env={"NEW_URL": "ftp://user:hunter2@x"})
    assert "hunter2" not in str(error)
    assert str(error) == (
        "t.yaml:3: targets.new.base_url: expected an http:// or https:// URL with a host, "
        "got '${NEW_URL}' (from the environment)"
    )


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAMINGO_TEST_HOST", "env.example")
    text = MINIMAL_TARGETS.replace("new.example", "${FLAMINGO_TEST_HOST}")
    assert parse_config(text, "t.yaml").new.base_url == "http://env.example"


def test_reserved_top_level_keys_are_accepted() -> None:
    text = (
        MINIMAL_TARGETS
        + """\
compare:
  ignore_headers: [date]
  ignore_json_paths: ["$.now"]
accepted: accepted.yaml
"""
    )
    assert parse_config(text, "t.yaml", env={}).old.base_url == "http://old.example"


def test_missing_targets_file_is_an_input_error(tmp_path: Path) -> None:
    error = error_of(load_config, tmp_path / "nope.yaml", env={})
    assert str(error) == f"{tmp_path / 'nope.yaml'}: no such file"


# --------------------------------------------------------------------------------------------
# Suites
# --------------------------------------------------------------------------------------------


def test_contract_suite_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "suites" / "static.yaml", CONTRACT_SUITE)
    [suite] = load_suites([tmp_path / "suites"])
    assert suite.name == "static-assets"
    assert suite.file == str(path) and suite.line == 1
    assert suite.tags == ("static", "smoke")
    assert suite.allow_side_effects is False
    assert suite.compare.ignore_headers == frozenset({"date", "server", "x-request-id"})
    assert suite.compare.ignore_json_paths == ("$.now", "$.items[*].updated_at")
    [mask] = suite.compare.mask
    assert mask.pattern.pattern == "[0-9a-f]{32}" and mask.replace == "<id>"

    get, missing, echo, create = suite.requests
    assert get == RequestSpec(
        name="get {{ path }} ({{ encoding }})",
        path="{{ path }}",
        line=10,
        method="GET",
        headers=(("User-Agent", "flamingo-test"), ("Accept-Encoding", "{{ encoding }}")),
        expect=ExpectSpec(status=(200,)),
        matrix=(
            ("path", ("/static/hello.txt", "/static/page.html", "/static/data.json")),
            ("encoding", ("identity", "gzip")),
        ),
    )
    assert missing.matrix == () and missing.expect.status == (404,) and missing.line == 14
    assert echo.matrix == (("q", ("a", "b", "c")),) and echo.repeat == 3
    assert echo.query == (("q", ("{{ q }}",)),)
    # "create item" uses no variable, so the suite matrix does not multiply it.
    assert create.matrix == () and create.method == "POST"
    assert create.has_json and create.json == {"name": "x"}
    assert [r.case_count for r in suite.requests] == [6, 1, 9, 1]
    assert suite.case_count == 17


def test_defaults_merge_request_wins_case_insensitively() -> None:
    text = """\
suite: merge
defaults:
  method: post
  headers: {User-Agent: ua, Accept: "*/*", X-Trace: "1"}
  query: {lang: en, page: 1}
  body: default body
  expect: {status: 200, headers: {Server: {absent: true}}}
requests:
  - name: a
    path: /a
    headers: {accept: text/html}
    query: {page: [2, 3]}
    json: [1, true, null]
    expect: {headers: {server: nginx}}
  - name: b
    method: delete
    path: /b
"""
    [suite] = parse_suites(text, "s.yaml")
    a, b = suite.requests
    assert a.method == "POST"
    assert a.headers == (("User-Agent", "ua"), ("X-Trace", "1"), ("accept", "text/html"))
    assert a.query == (("lang", ("en",)), ("page", ("2", "3")))
    assert a.has_json and a.json == [1, True, None] and a.body is None
    assert a.expect == ExpectSpec(status=(200,), headers=(HeaderExpectSpec("server", "nginx"),))
    assert b.method == "DELETE" and b.body == "default body" and not b.has_json
    assert b.expect.headers == (HeaderExpectSpec("server", absent=True),)


def test_expect_forms() -> None:
    text = """\
suite: expects
requests:
  - name: get
    path: /
    expect:
      status: [200, 304]
      headers:
        Content-Type: {regex: "^text/"}
        X-Cache: HIT
        Set-Cookie: {absent: true}
      json: null
"""
    [suite] = parse_suites(text, "s.yaml")
    expect = suite.requests[0].expect
    assert expect.status == (200, 304)
    assert expect.headers == (
        HeaderExpectSpec("content-type", regex="^text/"),
        HeaderExpectSpec("x-cache", equals="HIT"),
        HeaderExpectSpec("set-cookie", absent=True),
    )
    assert expect.has_json and expect.json is None


def test_request_matrix_replaces_suite_matrix_and_is_restricted_to_used_vars() -> None:
    text = """\
suite: m
matrix: {a: [1, 2], b: [x, y, z]}
requests:
  - {name: "r {{ b }}", path: /}
  - {name: "s {{ c }}", path: /, matrix: {c: [true, 1.5]}}
  - {name: "t {{ a }} {{ b }}", path: "/{{ a }}"}
"""
    [suite] = parse_suites(text, "s.yaml")
    r, s, t = suite.requests
    assert r.matrix == (("b", ("x", "y", "z")),)
    assert s.matrix == (("c", (True, 1.5)),)
    assert t.matrix == (("a", (1, 2)), ("b", ("x", "y", "z")))
    assert suite.case_count == 3 + 2 + 6


def test_yaml_12_scalars_norway_stays_a_string() -> None:
    text = """\
suite: countries
matrix: {country: [no, se, yes, on]}
requests:
  - {name: "get {{ country }}", path: "/{{ country }}", json: {"d": 2024-01-01, "n": 010}}
"""
    [suite] = parse_suites(text, "s.yaml")
    assert suite.requests[0].matrix == (("country", ("no", "se", "yes", "on")),)
    assert suite.requests[0].json == {"d": "2024-01-01", "n": 10}


def test_several_documents_in_one_file() -> None:
    text = (
        "suite: one\nrequests: [{name: a, path: /}]\n"
        "---\n"
        "suite: two\nrequests: [{name: b, path: /}]\n"
    )
    assert [s.name for s in parse_suites(text, "s.yaml")] == ["one", "two"]
    assert [s.line for s in parse_suites(text, "s.yaml")] == [1, 4]


def test_suite_files_sorted_recursive_and_deduplicated(tmp_path: Path) -> None:
    root = tmp_path / "suites"
    for rel in ["b.yaml", "a.yml", "sub/c.yaml", ".hidden/x.yaml", "notes.txt"]:
        name = Path(rel).stem
        write(root / rel, f"suite: {name}\nrequests: [{{name: r, path: /}}]\n")
    suites = load_suites([root, root / "b.yaml"])
    assert [s.name for s in suites] == ["a", "b", "c"]
    assert suites[2].file == os.path.join(str(root), "sub", "c.yaml")


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert str(error_of(load_suites, [missing])) == f"{missing}: no such file or directory"
    (tmp_path / "empty").mkdir()
    error = error_of(load_suites, [tmp_path / "empty"])
    assert str(error) == f"{tmp_path / 'empty'}: no suite files (*.yaml, *.yml) in this directory"
    assert str(error_of(load_suites, [])) == "no suite files or directories given"


def test_max_cases_per_suite_and_in_total() -> None:
    text = "suite: s\nrequests: [{name: a, path: /, repeat: 6}]\n"
    error = error_of(parse_suites, text, "s.yaml", max_cases=5)
    assert str(error) == "s.yaml:1: suite 's' expands to 6 cases, more than max_cases=5"
    two = text + "---\nsuite: t\nrequests: [{name: a, path: /, repeat: 6}]\n"
    error = error_of(parse_suites, two, "s.yaml", max_cases=10)
    assert str(error) == "s.yaml:4: the suites expand to 12 cases in total, more than max_cases=10"


def test_huge_matrix_is_rejected_without_expanding() -> None:
    values = "[" + ", ".join(str(i) for i in range(1000)) + "]"
    text = f"""\
suite: huge
matrix: {{a: {values}, b: {values}, c: {values}}}
requests: [{{name: "{{{{ a }}}} {{{{ b }}}} {{{{ c }}}}", path: /}}]
"""
    error = error_of(parse_suites, text, "s.yaml")
    assert error.message == "suite 'huge' expands to 1000000000 cases, more than max_cases=1000000"


def test_templates_in_status_and_method() -> None:
    text = """\
suite: t
matrix: {code: [200, "404"], verb: [get, head]}
requests:
  - name: "{{ verb }} {{ code }}"
    method: "{{ verb }}"
    path: "/status/{{ code }}"
    expect: {status: ["{{ code }}", 500]}
"""
    [suite] = parse_suites(text, "s.yaml")
    assert suite.requests[0].method == "{{ verb }}"
    assert suite.requests[0].expect.status == ("{{ code }}", 500)


def test_yaml_lines_are_recorded() -> None:
    doc = parse_document("a: 1\nb:\n  - x\n  - {c: d}\n", "f.yaml")
    assert isinstance(doc, YMap) and doc.lines == {"a": 1, "b": 2}
    seq = doc["b"]
    assert isinstance(seq, YList) and seq.item_lines == [3, 4] and seq.line == 3
    assert doc.value_lines["a"] == 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:- \n\t{}[]\"'#&*!|>%@`,?~$01")), max_size=60))
def test_garbage_only_ever_raises_input_error(text: str) -> None:
    for parse in (parse_suites, parse_config):
        try:
            parse(text, "g.yaml")
        except InputError as error:
            assert error.file == "g.yaml" and error.line is not None and error.line >= 1


def test_surrogate_pair_escapes_are_joined() -> None:
    [suite] = parse_suites(
        'suite: u\nrequests: [{name: "smile \\ud83d\\ude00", path: /}]\n', "u.yaml"
    )
    assert suite.requests[0].name == "smile \U0001f600"
