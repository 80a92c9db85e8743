"""POST /execute's pure parts: request validation, capping, answer shaping, settings."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import BadRequest
from gateway.execute import ExecuteRequest, check_file_name, parse_request, shape_result
from gateway.execute_config import ExecuteConfig
from hearth.env import ConfigError

LIMITS = ExecuteConfig()


def test_a_minimal_request_gets_the_defaults() -> None:
    run = parse_request({"language": "python", "code": "print(1)"}, LIMITS)
    assert run == ExecuteRequest(code="print(1)", timeout_s=10.0, memory_mb=128)


def test_language_defaults_to_python_and_accepts_aliases() -> None:
    assert parse_request({"code": ""}, LIMITS).code == ""
    for language in ("python3", "py"):
        parse_request({"language": language, "code": ""}, LIMITS)
    with pytest.raises(BadRequest, match="unknown language 'Python'"):
        parse_request({"language": "Python", "code": ""}, LIMITS)


def test_everything_given_is_carried_to_the_runtime() -> None:
    payload = {
        "code": "x", "stdin": "in", "args": ["a", "b c"], "timeout_s": 2.5, "memory_mb": 64,
        "files": [
            {"name": "d/f.txt", "content": "t"}, {"name": "b", "content": "AAE=", "encoding": "base64"},
        ],
    }
    body = orjson.loads(parse_request(payload, LIMITS).body(output_limit_bytes=100))
    assert body == {
        "code": "x", "stdin": "in", "args": ["a", "b c"], "timeout_s": 2.5, "memory_mb": 64,
        "files": [{"name": "d/f.txt", "content": "t", "encoding": "utf8"},
                  {"name": "b", "content": "AAE=", "encoding": "base64"}],
        "output_limit_bytes": 100,
    }


def test_limits_above_the_maxima_are_capped_not_refused() -> None:
    run = parse_request({"code": "", "timeout_s": 10**9, "memory_mb": 10**9}, LIMITS)
    assert (run.timeout_s, run.memory_mb) == (LIMITS.max_timeout_s, LIMITS.max_memory_mb)


@pytest.mark.parametrize(("payload", "fragment"), [
    ("print(1)", "JSON object"),
    ({"language": "ruby", "code": ""}, "unknown language 'ruby'"),
    ({"language": 3, "code": ""}, "unknown language"),
    ({"language": ["python"], "code": ""}, "unknown language"),
    ({}, "code is required"),
    ({"code": None}, "code is required"),
    ({"code": 1}, "code must be a string"),
    ({"code": "é" * (LIMITS.max_code_bytes // 2 + 1)}, "code is"),  # counted in UTF-8 bytes
    ({"code": "", "stdin": "x" * (LIMITS.max_stdin_bytes + 1)}, "stdin is"),
    ({"code": "", "stdin": ["a"]}, "stdin must be a string"),
    ({"code": "", "args": "a b"}, "args must be a list"),
    ({"code": "", "args": {}}, "args must be a list"),  # falsy is not absent: only null is
    ({"code": "", "files": 0}, "files must be a list"),
    ({"code": "", "args": ["a", 2]}, "args must be a list"),
    ({"code": "", "args": ["a\0b"]}, "NUL"),
    ({"code": "", "args": ["a"] * (LIMITS.max_args + 1)}, "args given"),
    ({"code": "", "args": ["a" * (LIMITS.max_arg_bytes + 1)]}, "an argument is"),
    ({"code": "", "files": {"a": "b"}}, "files must be a list"),
    ({"code": "", "files": ["a"]}, "each file must be an object"),
    ({"code": "", "files": [{"name": "a", "content": "", "mode": "755"}]}, "unknown file field"),
    ({"code": "", "files": [{"content": ""}]}, "non-empty string 'name'"),
    ({"code": "", "files": [{"name": "a"}]}, "string 'content'"),
    ({"code": "", "files": [{"name": "a", "content": "", "encoding": "hex"}]}, "unknown encoding"),
    ({"code": "", "files": [{"name": "a", "content": "***", "encoding": "base64"}]}, "not valid base64"),
    ({"code": "", "files": [{"name": "a", "content": ""}, {"name": "a", "content": ""}]}, "same name"),
    ({"code": "", "files": [{"name": f"f{i}", "content": ""} for i in range(LIMITS.max_files + 1)]},
     "files given"),
    ({"code": "", "files": [{"name": "a", "content": "x" * (LIMITS.max_files_bytes + 1)}]}, "the files hold"),
    ({"code": "", "timeout_s": "5"}, "timeout_s must be a positive number"),
    ({"code": "", "timeout_s": 0}, "timeout_s"),
    ({"code": "", "timeout_s": float("nan")}, "timeout_s"),
    ({"code": "", "timeout_s": False}, "timeout_s"),
    ({"code": "", "memory_mb": "64"}, "memory_mb must be a whole number"),
    ({"code": "", "memory_mb": 64.0}, "memory_mb must be a whole number"),
    ({"code": "", "memory_mb": 15}, "at least 16"),
    ({"code": "", "version": "3.12"}, "unknown field(s): version"),
])
def test_bad_requests_name_what_is_wrong(payload: Any, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(payload, LIMITS)
    assert fragment in str(caught.value)
    assert caught.value.status == 400


def test_base64_files_count_their_decoded_size() -> None:
    limits = ExecuteConfig(max_files_bytes=3)
    def files(content: str) -> dict[str, Any]:
        return {"code": "", "files": [{"name": "a", "content": content, "encoding": "base64"}]}

    parse_request(files("AAAA"), limits)  # 3 bytes
    with pytest.raises(BadRequest, match="the files hold 4 bytes"):
        parse_request(files("AAAAAA=="), limits)


@pytest.mark.parametrize("name", ["a", "main2.py", "pkg/__init__.py", "d/e/f-g_h.txt", ".hidden"])
def test_good_file_names(name: str) -> None:
    assert check_file_name(name) == name


@pytest.mark.parametrize(("name", "fragment"), [
    ("../x", "climbs out"),
    ("a/../../x", "climbs out"),
    ("..", "climbs out"),
    ("/etc/passwd", "absolute"),
    ("a//b", "not allowed"),
    ("a/./b", "not allowed"),
    (".", "not allowed"),
    ("a/", "not allowed"),
    ("a\\b", "not allowed"),
    ("sp ace", "not allowed"),
    ("nul\0", "not allowed"),
    ("x" * 129, "not allowed"),
    ("/".join("d" * 9), "not allowed"),
    ("main.py", "main.py"),
    ("", "non-empty"),
])
def test_bad_file_names(name: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_file_name(name)
    assert fragment in str(caught.value)


def test_shape_result_splits_output_and_decodes_leniently() -> None:
    meta = {"outcome": "ok", "status": "error", "exit_code": 1, "signal": None, "timed_out": False,
            "truncated": False, "duration_ms": 3.5, "stdout_bytes": 3, "recycle": False, "cpu_ms": 1}
    assert shape_result(meta, b"hi\n\xffboom") == {
        "status": "error", "stdout": "hi\n", "stderr": "\ufffdboom", "exit_code": 1, "signal": None,
        "timed_out": False, "truncated": False, "duration_ms": 3.5,
    }


def test_settings_from_the_environment() -> None:
    config = ExecuteConfig.from_env({
        "HEARTH_EXECUTE_MAX_TIMEOUT_S": "4", "HEARTH_EXECUTE_MAX_MEMORY_MB": "64",
        "HEARTH_EXECUTE_MAX_STDIN_BYTES": "10",
    })
    # Unset defaults follow lowered maxima.
    assert (config.max_timeout_s, config.default_timeout_s) == (4.0, 4.0)
    assert (config.max_memory_mb, config.default_memory_mb, config.max_stdin_bytes) == (64, 64, 10)
    assert ExecuteConfig.from_env({}) == ExecuteConfig()


@pytest.mark.parametrize(("environ", "fragment"), [
    ({"HEARTH_EXECUTE_MAX_TIMEOUT_S": "soon"}, "HEARTH_EXECUTE_MAX_TIMEOUT_S"),
    ({"HEARTH_EXECUTE_MAX_MEMORY_MB": "8"}, "HEARTH_EXECUTE_MAX_MEMORY_MB"),
    ({"HEARTH_EXECUTE_DEFAULT_TIMEOUT_S": "60"}, "HEARTH_EXECUTE_DEFAULT_TIMEOUT_S must not exceed"),
    ({"HEARTH_EXECUTE_DEFAULT_MEMORY_MB": "512"}, "HEARTH_EXECUTE_DEFAULT_MEMORY_MB must not exceed"),
])
def test_bad_settings_name_the_variable(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        ExecuteConfig.from_env(environ)
