"""The function registry: names, deploy-body validation, code archives, versions, persistence."""

from __future__ import annotations

import base64
import io
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from pool_manager.config import Config
from pool_manager.registry import (
    FunctionSpec,
    InvalidSpec,
    Registry,
    UnknownFunction,
    code_from_body,
    spec_from_body,
    validate_name,
)

SOURCE = "def handle(event, context):\n    return event\n"
FIXED_DATE = (2024, 1, 2, 3, 4, 6)


def make_config(tmp_path: Path, **extra: str) -> Config:
    env = {"HEARTH_ADMIN_TOKEN": "x" * 12, "HEARTH_DATA_DIR": str(tmp_path), "HEARTH_MAX_CONTAINERS": "64"}
    return Config.from_env({**env, **extra})


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def make_zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, FIXED_DATE), data)
    return out.getvalue()


def make_targz(files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def zip_files(code: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(code)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def deploy(config: Config, name: str = "echo", **body: Any) -> tuple[FunctionSpec, bytes]:
    body = {"source": SOURCE, **body}
    code = code_from_body(body)
    return spec_from_body(name, body, code, config), code


# -- names -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "0", "echo", "my-func-2", "9lives", "a-", "a" * 63, "x" + "-" * 62])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "Echo", "ECHO", "-lead", "-", "a" * 64, "under_score", "dot.ted", "sp ace", "a/b",
     "../etc", "ünï", "echo\n", "tab\t"],
)
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidSpec, match="invalid function name"):
        validate_name(name)


# -- spec_from_body ------------------------------------------------------------------


def test_spec_defaults(config: Config) -> None:
    spec, _ = deploy(config)
    assert spec.name == "echo"
    assert spec.handler == "main.handle"
    assert spec.timeout_s == 30.0 and isinstance(spec.timeout_s, float)
    assert (spec.memory_mb, spec.concurrency, spec.min_scale, spec.max_scale) == (128, 1, 0, 10)
    assert (spec.env, spec.network, spec.webhook_secret) == ({}, False, None)
    assert len(spec.version) == 16
    int(spec.version, 16)


def test_spec_defaults_follow_config(tmp_path: Path) -> None:
    config = make_config(tmp_path, HEARTH_DEFAULT_TIMEOUT_S="7", HEARTH_DEFAULT_MEMORY_MB="256")
    spec, _ = deploy(config)
    assert (spec.timeout_s, spec.memory_mb) == (7.0, 256)


def test_spec_accepts_every_field(config: Config) -> None:
    archive = b64(make_zip({"pkg/__init__.py": b"", "pkg/mod.py": b"def entry(e, c):\n    return 1\n"}))
    spec, _ = deploy(
        config, source=None, archive=archive, handler="pkg.mod.entry", timeout_s=300, memory_mb=2048,
        concurrency=1000, min_scale=64, max_scale=64, network=True, webhook_secret="s3cret",
        env={"A": "1", "_b2": "", "hearth_lower": "ok", "HEARTHX": "ok"},
    )
    assert spec.handler == "pkg.mod.entry"
    assert spec.timeout_s == 300.0 and isinstance(spec.timeout_s, float)
    assert (spec.memory_mb, spec.concurrency, spec.min_scale, spec.max_scale) == (2048, 1000, 64, 64)
    assert spec.env == {"A": "1", "_b2": "", "hearth_lower": "ok", "HEARTHX": "ok"}
    assert (spec.network, spec.webhook_secret) == (True, "s3cret")


@pytest.mark.parametrize(
    ("body", "attr", "expected"),
    [
        ({"timeout_s": 0.01}, "timeout_s", 0.01),
        ({"timeout_s": 5}, "timeout_s", 5.0),
        ({"memory_mb": 16}, "memory_mb", 16),
        ({"concurrency": 1}, "concurrency", 1),
        ({"min_scale": 20}, "max_scale", 20),  # the default max_scale rises to min_scale
        ({"min_scale": 3}, "max_scale", 10),
        ({"max_scale": 1}, "max_scale", 1),
        ({"min_scale": 2, "max_scale": 2}, "min_scale", 2),
        ({"webhook_secret": None}, "webhook_secret", None),
    ],
)
def test_spec_boundaries_accepted(config: Config, body: dict[str, Any], attr: str, expected: object) -> None:
    spec, _ = deploy(config, **body)
    assert getattr(spec, attr) == expected


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"foo": 1}, r"unknown field\(s\): foo"),
        ({"zeta": 1, "alpha": 2}, r"unknown field\(s\): alpha, zeta"),
        ({"handler": 1}, "handler"),
        ({"handler": ""}, "handler"),
        ({"handler": "main"}, "handler"),
        ({"handler": "main."}, "handler"),
        ({"handler": ".handle"}, "handler"),
        ({"handler": "1main.handle"}, "handler"),
        ({"handler": "main.handle()"}, "handler"),
        ({"handler": "main handle"}, "handler"),
        ({"handler": "main.handle\n"}, "handler"),
        ({"timeout_s": "30"}, "timeout_s must be a number"),
        ({"timeout_s": True}, "timeout_s must be a number"),
        ({"timeout_s": None}, "timeout_s must be a number"),
        ({"timeout_s": 0}, "timeout_s must be between"),
        ({"timeout_s": 0.001}, "timeout_s must be between"),
        ({"timeout_s": 300.5}, "timeout_s must be between"),
        ({"timeout_s": -1}, "timeout_s must be between"),
        ({"memory_mb": 128.0}, "memory_mb must be an integer"),
        ({"memory_mb": "128"}, "memory_mb must be an integer"),
        ({"memory_mb": True}, "memory_mb must be an integer"),
        ({"memory_mb": 15}, "memory_mb must be between 16 and 2048"),
        ({"memory_mb": 2049}, "memory_mb must be between"),
        ({"concurrency": 0}, "concurrency must be between 1 and 1000"),
        ({"concurrency": 1001}, "concurrency must be between"),
        ({"concurrency": 1.5}, "concurrency must be an integer"),
        ({"concurrency": False}, "concurrency must be an integer"),
        ({"min_scale": -1}, "min_scale must be between 0 and 64"),
        ({"min_scale": 65}, "min_scale must be between"),
        ({"min_scale": "1"}, "min_scale must be an integer"),
        ({"max_scale": 0}, "max_scale must be between 1 and 64"),
        ({"max_scale": 65}, "max_scale must be between"),
        ({"max_scale": 2.0}, "max_scale must be an integer"),
        ({"min_scale": 5, "max_scale": 3}, r"min_scale \(5\) must not exceed max_scale \(3\)"),
        ({"env": []}, "env must be an object"),
        ({"env": "A=1"}, "env must be an object"),
        ({"env": {"1A": "x"}}, "env key '1A'"),
        ({"env": {"A-B": "x"}}, "env key 'A-B'"),
        ({"env": {"": "x"}}, "env key ''"),
        ({"env": {"A B": "x"}}, "env key"),
        ({"env": {"HEARTH_TOKEN": "x"}}, r"env key 'HEARTH_TOKEN'.*HEARTH_\* is reserved"),
        ({"env": {"HEARTH_": "x"}}, "env key 'HEARTH_'"),
        ({"env": {"A": 1}}, "env value of 'A' must be a string"),
        ({"env": {"A": None}}, "env value of 'A'"),
        ({"env": {"A": ["x"]}}, "env value of 'A'"),
        ({"network": "true"}, "network must be true or false"),
        ({"network": 1}, "network must be true or false"),
        ({"network": None}, "network must be true or false"),
        ({"webhook_secret": ""}, "webhook_secret must be a non-empty string"),
        ({"webhook_secret": 5}, "webhook_secret"),
    ],
)
def test_spec_validation_errors(config: Config, body: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidSpec, match=match):
        spec_from_body("echo", {"source": SOURCE, **body}, b"code", config)


@pytest.mark.parametrize("handler", ["cold.handle", "main.sub.handle", "pkg.main.handle"])
def test_single_file_handler_must_be_in_main(config: Config, handler: str) -> None:
    with pytest.raises(InvalidSpec, match=rf"handler '{handler}': a single-file deploy is saved as main\.py"):
        deploy(config, handler=handler)


def test_single_file_may_name_any_function_of_main(config: Config) -> None:
    assert deploy(config, handler="main.other")[0].handler == "main.other"


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("def handle(event, context):\n    return (\n", r"SyntaxError: .* \(main\.py, line 2\)"),
        ("x = 1\n\ndef handle(e, c)\n    return 1\n", r"SyntaxError: .* \(main\.py, line 3\)"),
        ("def handle(e, c):\nreturn 1\n", r"IndentationError: .* \(main\.py, line 2\)"),
        ("x = 1\x00\n", "(SyntaxError|ValueError): .*null bytes"),  # which one depends on the Python
    ],
)
def test_source_that_does_not_compile_is_refused(config: Config, source: str, match: str) -> None:
    with pytest.raises(InvalidSpec, match="^source does not compile: " + match):
        deploy(config, source=source)


def test_source_is_compiled_not_run(config: Config, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()\nimport does_not_exist\n"
    deploy(config, source=source)  # a missing import is the runtime's to report
    assert not marker.exists()


@pytest.mark.parametrize(
    ("files", "handler"),
    [
        ({"main.py": b""}, "main.handle"),
        ({"app.py": b""}, "app.run"),
        ({"pkg/__init__.py": b"", "pkg/mod.py": b""}, "pkg.mod.entry"),
        ({"pkg/mod.py": b""}, "pkg.mod.entry"),  # a namespace package
        ({"pkg/mod/__init__.py": b""}, "pkg.mod.entry"),
    ],
)
def test_archive_holding_the_handler_module_is_accepted(
    config: Config, files: dict[str, bytes], handler: str
) -> None:
    assert deploy(config, source=None, archive=b64(make_zip(files)), handler=handler)[0].handler == handler


@pytest.mark.parametrize(
    ("files", "handler", "missing"),
    [
        ({"app.py": b""}, "main.handle", "main.py nor main/__init__.py"),
        ({"src/main.py": b""}, "main.handle", "main.py nor main/__init__.py"),
        ({"pkg/__init__.py": b""}, "pkg.mod.entry", "pkg/mod.py nor pkg/mod/__init__.py"),
        ({"pkg/mod/": b""}, "pkg.mod.entry", "pkg/mod.py nor pkg/mod/__init__.py"),
    ],
)
def test_archive_without_the_handler_module_is_refused(
    config: Config, files: dict[str, bytes], handler: str, missing: str
) -> None:
    with pytest.raises(InvalidSpec, match=rf"handler '{handler}': the archive has neither {missing}"):
        deploy(config, source=None, archive=b64(make_zip(files)), handler=handler)


def test_targz_archive_is_checked_for_the_handler_module_too(config: Config) -> None:
    archive = b64(make_targz({"./app.py": b""}, dirs=(".",)))
    assert deploy(config, source=None, archive=archive, handler="app.run")[0].handler == "app.run"
    with pytest.raises(InvalidSpec, match=r"neither main\.py"):
        deploy(config, source=None, archive=archive)


@pytest.mark.parametrize("body", [None, [], "text", 5])
def test_spec_body_must_be_an_object(config: Config, body: Any) -> None:
    with pytest.raises(InvalidSpec, match="JSON object"):
        spec_from_body("echo", body, b"code", config)


def test_spec_name_is_validated(config: Config) -> None:
    with pytest.raises(InvalidSpec, match="invalid function name"):
        spec_from_body("Echo", {}, b"code", config)


@pytest.mark.parametrize(
    ("settings", "body", "match"),
    [
        ({"HEARTH_MAX_TIMEOUT_S": "60"}, {"timeout_s": 61}, "timeout_s must be between 0.01 and 60"),
        ({"HEARTH_MAX_MEMORY_MB": "512"}, {"memory_mb": 513}, "memory_mb must be between 16 and 512"),
        ({"HEARTH_MAX_CONTAINERS": "20"}, {"max_scale": 21}, "max_scale must be between 1 and 20"),
        ({"HEARTH_MAX_CONTAINERS": "20"}, {"min_scale": 21}, "min_scale must be between 0 and 20"),
    ],
)
def test_limits_come_from_config(
    tmp_path: Path, settings: dict[str, str], body: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidSpec, match=match):
        spec_from_body("echo", body, b"code", make_config(tmp_path, **settings))


def test_default_max_scale_fits_a_small_max_containers(tmp_path: Path) -> None:
    config = make_config(tmp_path, HEARTH_MAX_CONTAINERS="4")
    spec = spec_from_body("echo", {}, b"code", config)
    assert spec.max_scale == 4


def test_public_masks_the_webhook_secret(config: Config) -> None:
    spec, _ = deploy(config, webhook_secret="s3cret")
    public = spec.public()
    assert public["webhook_secret"] == "***"
    assert public["name"] == "echo" and public["version"] == spec.version
    assert deploy(config)[0].public()["webhook_secret"] is None


# -- code_from_body --------------------------------------------------------------------


def test_source_becomes_a_zip_with_main_py() -> None:
    assert zip_files(code_from_body({"source": SOURCE})) == {"main.py": SOURCE.encode()}


def test_source_null_with_archive_uses_the_archive() -> None:
    raw = make_zip({"main.py": b"x = 1\n"})
    assert code_from_body({"source": None, "archive": b64(raw)}) == raw


def test_zip_archive_is_kept_as_sent() -> None:
    raw = make_zip({"main.py": b"import lib\n", "lib/__init__.py": b"", "lib/data.txt": b"\x00\x01"})
    assert code_from_body({"archive": b64(raw)}) == raw


def test_targz_archive_becomes_a_zip_with_the_same_files() -> None:
    files = {"main.py": b"import lib\n", "lib/__init__.py": b"", "lib/data.bin": bytes(range(256))}
    raw = make_targz(files, dirs=("lib",))
    code = code_from_body({"archive": b64(raw)})
    assert code[:2] == b"PK"
    assert zip_files(code) == files  # directories dropped, files identical


def test_targz_leading_dot_slash_is_dropped() -> None:
    raw = make_targz({"./main.py": b"x = 1\n", "./pkg/a.py": b"y = 2\n"}, dirs=(".", "./pkg"))
    assert zip_files(code_from_body({"archive": b64(raw)})) == {"main.py": b"x = 1\n", "pkg/a.py": b"y = 2\n"}


def test_plain_tar_is_accepted_too() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        info = tarfile.TarInfo("main.py")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"x=1"))
    assert zip_files(code_from_body({"archive": b64(out.getvalue())})) == {"main.py": b"x=1"}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({}, "exactly one of source"),
        ({"source": None, "archive": None}, "exactly one of source"),
        ({"source": SOURCE, "archive": b64(make_zip({"main.py": b""}))}, "exactly one of source"),
        ({"source": 5}, "source must be a string"),
        ({"source": [SOURCE]}, "source must be a string"),
        ({"archive": 5}, "archive must be a base64 string"),
        ({"archive": "not base64!!"}, "not valid base64"),
        ({"archive": "abc"}, "not valid base64"),  # bad padding
        ({"archive": "QUJD\nREVG"}, "not valid base64"),  # validate=True: no stray characters
        ({"archive": ""}, "neither a zip nor a tar.gz"),
        ({"archive": b64(b"just some bytes, not an archive")}, "neither a zip nor a tar.gz"),
        ({"archive": b64(b"PK\x03\x04 broken zip")}, "not a valid zip"),
    ],
)
def test_code_errors(body: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidSpec, match=match):
        code_from_body(body)


@pytest.mark.parametrize("member", ["../x", "/abs", "a/../../x", "a/..", "..", "a\\..\\x", "/"])
def test_unsafe_zip_paths_rejected(member: str) -> None:
    raw = make_zip({"main.py": b"", member: b"evil"})
    with pytest.raises(InvalidSpec, match="unsafe path"):
        code_from_body({"archive": b64(raw)})


@pytest.mark.parametrize("member", ["../x", "/abs", "a/../../x", "./../x"])
def test_unsafe_targz_paths_rejected(member: str) -> None:
    raw = make_targz({"main.py": b"", member: b"evil"})
    with pytest.raises(InvalidSpec, match="unsafe path"):
        code_from_body({"archive": b64(raw)})


def test_targz_links_rejected() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        link = tarfile.TarInfo("main.py")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(InvalidSpec, match="not a regular file"):
        code_from_body({"archive": b64(out.getvalue())})


def test_code_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pool_manager.registry.MAX_CODE_BYTES", 200)
    code_from_body({"archive": b64(make_zip({"main.py": b"x"}))})
    with pytest.raises(InvalidSpec, match="larger than 200 bytes"):
        code_from_body({"archive": b64(make_zip({f"m{i}.py": b"x" for i in range(10)}))})


# -- versions ---------------------------------------------------------------------------


def version_of(config: Config, body: dict[str, Any], code: bytes = b"code", name: str = "echo") -> str:
    return spec_from_body(name, body, code, config).version


def test_version_is_stable_for_the_same_code_and_settings(config: Config) -> None:
    body = {"handler": "main.handle", "env": {"A": "1", "B": "2"}, "timeout_s": 30}
    assert version_of(config, body) == version_of(config, dict(body))
    # equal settings written differently: key order, int vs float, defaults spelled out
    assert version_of(config, body) == version_of(
        config, {"timeout_s": 30.0, "env": {"B": "2", "A": "1"}, "handler": "main.handle", "concurrency": 1}
    )


def test_version_changes_with_the_code(config: Config) -> None:
    assert version_of(config, {}, b"code") != version_of(config, {}, b"code2")


@pytest.mark.parametrize(
    "change",
    [
        {"handler": "main.other"},
        {"timeout_s": 31},
        {"memory_mb": 256},
        {"concurrency": 2},
        {"min_scale": 1},
        {"max_scale": 11},
        {"env": {"A": "1"}},
        {"network": True},
        {"webhook_secret": "s"},
    ],
)
def test_version_changes_with_each_setting(config: Config, change: dict[str, Any]) -> None:
    assert version_of(config, change) != version_of(config, {})


def test_version_changes_with_the_name(config: Config) -> None:
    assert version_of(config, {}, name="a") != version_of(config, {}, name="b")


def test_source_zip_is_identical_within_one_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    assert code_from_body({"source": SOURCE}) == code_from_body({"source": SOURCE})


def test_redeploying_unchanged_source_later_keeps_the_version(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"source": SOURCE}
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    first = spec_from_body("echo", body, code_from_body(body), config)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_060.0)  # a minute later
    second = spec_from_body("echo", body, code_from_body(body), config)
    assert second.version == first.version


# -- Registry persistence ---------------------------------------------------------------


@pytest.fixture
def functions_dir(config: Config) -> Path:
    return config.functions_dir


def test_empty_registry(functions_dir: Path) -> None:
    registry = Registry(functions_dir)
    assert functions_dir.is_dir()
    assert registry.all() == []
    with pytest.raises(UnknownFunction):
        registry.get("echo")


def test_put_persists_across_instances(config: Config, functions_dir: Path) -> None:
    spec, code = deploy(config, env={"A": "1"}, webhook_secret="s")
    Registry(functions_dir).put(spec, code)
    reopened = Registry(functions_dir)
    assert reopened.get("echo") == spec
    assert reopened.code(spec) == code
    on_disk = sorted(p.name for p in functions_dir.iterdir())
    assert on_disk == sorted(["echo.json", f"echo.{spec.version}.zip"])


def test_all_is_sorted_by_name(config: Config, functions_dir: Path) -> None:
    registry = Registry(functions_dir)
    for name in ["zeta", "alpha", "mid"]:
        registry.put(*deploy(config, name))
    assert [s.name for s in registry.all()] == ["alpha", "mid", "zeta"]
    assert [s.name for s in Registry(functions_dir).all()] == ["alpha", "mid", "zeta"]


def test_update_replaces_the_old_code_file(config: Config, functions_dir: Path) -> None:
    registry = Registry(functions_dir)
    old, old_code = deploy(config, source="def handle(e, c):\n    return 1\n")
    registry.put(old, old_code)
    new, new_code = deploy(config, source="def handle(e, c):\n    return 2\n")
    assert new.version != old.version
    registry.put(new, new_code)
    assert registry.get("echo") == new
    assert not (functions_dir / f"echo.{old.version}.zip").exists()
    assert (functions_dir / f"echo.{new.version}.zip").read_bytes() == new_code
    reopened = Registry(functions_dir)
    assert reopened.get("echo") == new
    assert reopened.code(new) == new_code


def test_settings_only_update_replaces_the_spec(config: Config, functions_dir: Path) -> None:
    registry = Registry(functions_dir)
    spec, code = deploy(config)
    registry.put(spec, code)
    bigger = spec_from_body("echo", {"source": SOURCE, "memory_mb": 256}, code, config)
    registry.put(bigger, code)
    assert Registry(functions_dir).get("echo").memory_mb == 256
    on_disk = sorted(p.name for p in functions_dir.iterdir())
    assert on_disk == sorted(["echo.json", f"echo.{bigger.version}.zip"])


def test_putting_the_same_version_again_keeps_the_code(config: Config, functions_dir: Path) -> None:
    registry = Registry(functions_dir)
    spec, code = deploy(config)
    registry.put(spec, code)
    registry.put(spec, code)
    assert Registry(functions_dir).code(spec) == code


def test_remove(config: Config, functions_dir: Path) -> None:
    registry = Registry(functions_dir)
    spec, code = deploy(config)
    registry.put(spec, code)
    registry.put(*deploy(config, "other"))
    assert registry.remove("echo") == spec
    with pytest.raises(UnknownFunction):
        registry.get("echo")
    assert not (functions_dir / "echo.json").exists()
    assert not (functions_dir / f"echo.{spec.version}.zip").exists()
    assert [s.name for s in Registry(functions_dir).all()] == ["other"]


def test_remove_unknown(functions_dir: Path) -> None:
    with pytest.raises(UnknownFunction):
        Registry(functions_dir).remove("ghost")


def test_unknown_function_is_a_key_error() -> None:
    assert issubclass(UnknownFunction, KeyError)


def test_leftover_temp_files_do_not_stop_loading(config: Config, functions_dir: Path) -> None:
    spec, code = deploy(config)
    Registry(functions_dir).put(spec, code)
    leftovers = [
        functions_dir / ".x.json.123.tmp",
        functions_dir / f".echo.{spec.version}.zip.456.tmp",
        functions_dir / ".echo.json.789.tmp",
    ]
    leftovers[0].write_bytes(b"{half a rec")
    leftovers[1].write_bytes(b"PK half a zip")
    leftovers[2].write_bytes(orjson.dumps({"name": "echo", "version": "ffff"}))
    reopened = Registry(functions_dir)
    assert reopened.get("echo") == spec
    assert [s.name for s in reopened.all()] == ["echo"]
    assert not any(p.exists() for p in leftovers)  # cleaned up at start


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[1, 2]", b'"text"', b"null", b'{"unexpected": 1}', b'{"version": "abc"}'],
)
def test_corrupt_record_is_skipped(config: Config, functions_dir: Path, content: bytes) -> None:
    spec, code = deploy(config)
    Registry(functions_dir).put(spec, code)
    (functions_dir / "broken.json").write_bytes(content)
    reopened = Registry(functions_dir)
    assert [s.name for s in reopened.all()] == ["echo"]
    with pytest.raises(UnknownFunction):
        reopened.get("broken")


def test_spec_without_its_code_file_is_skipped(config: Config, functions_dir: Path) -> None:
    registry = Registry(functions_dir)
    lost, lost_code = deploy(config, "lost")
    registry.put(lost, lost_code)
    registry.put(*deploy(config, "kept"))
    (functions_dir / f"lost.{lost.version}.zip").unlink()
    reopened = Registry(functions_dir)
    assert [s.name for s in reopened.all()] == ["kept"]
    with pytest.raises(UnknownFunction):
        reopened.get("lost")
