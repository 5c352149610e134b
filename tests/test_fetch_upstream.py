"""The fetch step of the upstream files the tests read (tests/fetch_upstream.py): from a mirror, or downloaded
(from a loopback HTTP server started here: a file at a URL, and a member of a .tgz), every hash verified, one
line per file that fails, nothing half-written, and the tests' reader (tests/upstream.py) refusing a cache that
was not verified against the lock as it is."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgldeploy.builders.addons import CHARTS

from . import fetch_upstream, upstream
from .fetch_upstream import MIRROR_ENV, STAMP, LockError, fetch_all, mirror_root

SCRIPT = Path(fetch_upstream.__file__)
CLOSED_PORT_URL = "http://127.0.0.1:9/nothing-listens-here.yaml"  # the discard port: connection refused
CRD = b"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
VALUES = b"replicaCount: 1\nimage:\n  tag: v1\n"
EDITED = CRD + b"# edited\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_lock(path: Path, files: list[dict]) -> Path:
    path.write_text(json.dumps({"files": files, "charts": {}}))
    return path


def chart_tgz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path) -> Iterator[tuple[Path, str]]:
    """(directory served, its base URL) on a loopback HTTP server."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def leftovers(cache: Path) -> list[str]:
    """Temporary files a write left behind."""
    return [p.name for p in cache.rglob(".*") if p.name != STAMP]


def test_every_file_comes_from_the_mirror_verified_and_the_stamp_names_the_lock(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    (mirror / "crds").mkdir(parents=True)
    (mirror / "crds" / "a.yaml").write_bytes(CRD)
    (mirror / "data" / "charts" / "c-1.0.0").mkdir(parents=True)
    (mirror / "data" / "charts" / "c-1.0.0" / "values.yaml").write_bytes(VALUES)
    lock = write_lock(
        tmp_path / "lock.json",
        [
            {"path": "crds/a.yaml", "url": CLOSED_PORT_URL, "sha256": sha(CRD)},
            {"path": "data/charts/c-1.0.0/values.yaml", "url": CLOSED_PORT_URL, "sha256": sha(VALUES)},
        ],
    )
    assert fetch_all(lock, cache, mirror) == ({"mirror": 2}, [])
    assert (cache / "crds" / "a.yaml").read_bytes() == CRD
    assert (cache / "data" / "charts" / "c-1.0.0" / "values.yaml").read_bytes() == VALUES
    assert (cache / STAMP).read_text() == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert fetch_all(lock, cache, mirror) == ({"cached": 2}, [])  # intact files are kept
    assert leftovers(cache) == []


def test_a_mirror_file_with_another_hash_is_one_line_and_nothing_is_written(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    (mirror / "crds").mkdir(parents=True)
    (mirror / "crds" / "a.yaml").write_bytes(EDITED)
    (mirror / "crds" / "b.yaml").write_bytes(CRD)
    lock = write_lock(
        tmp_path / "lock.json",
        [
            {"path": "crds/a.yaml", "url": CLOSED_PORT_URL, "sha256": sha(CRD)},
            {"path": "crds/b.yaml", "url": CLOSED_PORT_URL, "sha256": sha(CRD)},
        ],
    )
    counts, problems = fetch_all(lock, cache, mirror)
    assert counts == {"mirror": 1}
    assert problems == [
        f"error: crds/a.yaml: sha256 of the mirror's copy {mirror / 'crds' / 'a.yaml'} is "
        f"{sha(EDITED)}, the lock pins {sha(CRD)}; the file changed upstream or in the mirror: "
        "check it, then re-pin it in tests/upstream.lock.json"
    ]
    assert not (cache / "crds" / "a.yaml").exists() and (cache / "crds" / "b.yaml").read_bytes() == CRD
    assert not (cache / STAMP).exists() and leftovers(cache) == []


def test_a_damaged_cache_file_is_fetched_again(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    (mirror / "crds").mkdir(parents=True)
    (mirror / "crds" / "a.yaml").write_bytes(CRD)
    lock = write_lock(
        tmp_path / "lock.json", [{"path": "crds/a.yaml", "url": CLOSED_PORT_URL, "sha256": sha(CRD)}]
    )
    fetch_all(lock, cache, mirror)
    (cache / "crds" / "a.yaml").write_bytes(b"truncated")
    assert fetch_all(lock, cache, mirror) == ({"mirror": 1}, [])
    assert (cache / "crds" / "a.yaml").read_bytes() == CRD
    # damaged again, and the mirror's copy too: the stamp of the earlier success goes, so the tests read nothing
    (cache / "crds" / "a.yaml").write_bytes(b"truncated")
    (mirror / "crds" / "a.yaml").write_bytes(EDITED)
    counts, [problem] = fetch_all(lock, cache, mirror)
    assert (
        problem.startswith("error: crds/a.yaml: sha256 of the mirror's copy") and not (cache / STAMP).exists()
    )


def test_a_write_that_fails_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    (mirror / "crds").mkdir(parents=True)
    (mirror / "crds" / "a.yaml").write_bytes(CRD)
    lock = write_lock(
        tmp_path / "lock.json", [{"path": "crds/a.yaml", "url": CLOSED_PORT_URL, "sha256": sha(CRD)}]
    )

    def disk_full(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fetch_upstream.os, "replace", disk_full)
    counts, problems = fetch_all(lock, cache, mirror)
    assert problems == [
        f"error: crds/a.yaml: could not write {cache / 'crds' / 'a.yaml'} ([Errno 28] No space left on device); "
        "check the cache's disk"
    ]
    assert (
        not (cache / "crds" / "a.yaml").exists() and leftovers(cache) == [] and not (cache / STAMP).exists()
    )


def test_files_the_lock_no_longer_pins_leave_the_cache(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    (mirror / "crds").mkdir(parents=True)
    (mirror / "crds" / "a.yaml").write_bytes(CRD)
    (cache / "crds").mkdir(parents=True)
    (cache / "crds" / "dropped.yaml").write_bytes(CRD)
    (cache / "data" / "charts" / "old-0.1.0").mkdir(parents=True)
    (cache / "data" / "charts" / "old-0.1.0" / "values.yaml").write_bytes(VALUES)
    lock = write_lock(
        tmp_path / "lock.json", [{"path": "crds/a.yaml", "url": CLOSED_PORT_URL, "sha256": sha(CRD)}]
    )
    assert fetch_all(lock, cache, mirror) == ({"mirror": 1}, [])
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")) == ["crds", "crds/a.yaml", STAMP]


def test_without_a_mirror_files_are_downloaded_by_url_and_from_a_published_tgz(tmp_path, http_root):
    served, base = http_root
    (served / "crd.yaml").write_bytes(CRD)
    tgz = chart_tgz({"c/Chart.yaml": b"name: c\n", "c/values.yaml": VALUES})
    (served / "c-1.0.0.tgz").write_bytes(tgz)
    lock = write_lock(
        tmp_path / "lock.json",
        [
            {"path": "crds/a.yaml", "url": f"{base}/crd.yaml", "sha256": sha(CRD)},
            {
                "path": "data/charts/c-1.0.0/values.yaml",
                "archive": {"url": f"{base}/c-1.0.0.tgz", "sha256": sha(tgz), "member": "c/values.yaml"},
                "sha256": sha(VALUES),
            },
        ],
    )
    cache = tmp_path / "cache"
    assert fetch_all(lock, cache, None) == ({"downloaded": 2}, [])
    assert (cache / "crds" / "a.yaml").read_bytes() == CRD
    assert (cache / "data" / "charts" / "c-1.0.0" / "values.yaml").read_bytes() == VALUES
    assert (cache / STAMP).exists() and leftovers(cache) == []


def test_a_download_that_differs_from_its_pin_is_one_line_each(tmp_path, http_root):
    served, base = http_root
    (served / "crd.yaml").write_bytes(EDITED)
    tgz = chart_tgz({"c/values.yaml": VALUES})
    (served / "c.tgz").write_bytes(tgz)
    pinned = {"path": "data/charts/c-1.0.0/values.yaml", "sha256": sha(VALUES)}
    lock = write_lock(
        tmp_path / "lock.json",
        [
            {"path": "crds/a.yaml", "url": f"{base}/crd.yaml", "sha256": sha(CRD)},
            {
                **pinned,
                "archive": {"url": f"{base}/c.tgz", "sha256": sha(b"other"), "member": "c/values.yaml"},
            },
            {
                "path": "data/charts/d-1.0.0/values.yaml",
                "archive": {"url": f"{base}/c.tgz", "sha256": sha(tgz), "member": "d/values.yaml"},
                "sha256": sha(VALUES),
            },
            {"path": "crds/gone.yaml", "url": f"{base}/gone.yaml", "sha256": sha(CRD)},
        ],
    )
    cache = tmp_path / "cache"
    counts, problems = fetch_all(lock, cache, None)
    assert counts == {}
    assert problems == [
        f"error: crds/a.yaml: sha256 of {base}/crd.yaml is {sha(EDITED)}, the lock pins "
        f"{sha(CRD)}; the file changed upstream or in the mirror: check it, then re-pin it in "
        "tests/upstream.lock.json",
        f"error: data/charts/c-1.0.0/values.yaml: no mirror and {base}/c.tgz has sha256 {sha(tgz)}, the lock "
        f"pins {sha(b'other')}; set {MIRROR_ENV} to a copy of ../shared or go online",
        f"error: data/charts/d-1.0.0/values.yaml: no mirror and {base}/c.tgz has no member d/values.yaml; "
        f"set {MIRROR_ENV} to a copy of ../shared or go online",
        f"error: crds/gone.yaml: no mirror and could not download {base}/gone.yaml (HTTP 404 File not found); "
        f"set {MIRROR_ENV} to a copy of ../shared or go online",
    ]
    assert not cache.exists() or [p for p in cache.rglob("*") if p.is_file()] == []


def run_script(tmp_path: Path, *args: str, mirror: Path | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"} | ({MIRROR_ENV: str(mirror)} if mirror is not None else {})
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


def test_a_file_neither_in_the_mirror_nor_reachable_is_one_line_and_exit_1(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    lock = write_lock(
        tmp_path / "lock.json", [{"path": "crds/a.yaml", "url": CLOSED_PORT_URL, "sha256": sha(CRD)}]
    )
    result = run_script(tmp_path, "--lock", str(lock), "--cache", str(tmp_path / "cache"), mirror=mirror)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        rf"error: crds/a\.yaml: not in the mirror {re.escape(str(mirror))} and could not download "
        rf"{re.escape(CLOSED_PORT_URL)} \(.*refused.*\); set {MIRROR_ENV} to a copy of \.\./shared or go online",
        line,
    ), line
    assert "1 failed" in result.stdout and not (tmp_path / "cache" / STAMP).exists()


@pytest.mark.parametrize(
    "lock_text, expected",
    [
        ("{not json", "is not a readable JSON lock"),
        ('{"files": []}', "files: is not a non-empty list"),
        (
            '{"files": [{"path": "../x", "url": "https://a/b", "sha256": "' + "0" * 64 + '"}]}',
            "files[0].path",
        ),
        ('{"files": [{"path": "x", "url": "https://a/b", "sha256": "abc"}]}', "files[0].sha256"),
        ('{"files": [{"path": "x", "sha256": "' + "0" * 64 + '"}]}', "needs exactly one of url and archive"),
    ],
)
def test_an_unusable_lock_is_one_line_and_exit_2(tmp_path, lock_text, expected):
    lock = tmp_path / "lock.json"
    lock.write_text(lock_text)
    result = run_script(tmp_path, "--lock", str(lock), "--cache", str(tmp_path / "cache"), mirror=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {lock}: ") and expected in line


def test_the_mirror_is_the_variable_s_directory_else_none(tmp_path):
    named = tmp_path / "named"
    named.mkdir()
    assert mirror_root({MIRROR_ENV: str(named)}) == named
    assert mirror_root({}) is None
    assert mirror_root({MIRROR_ENV: ""}) is None
    with pytest.raises(LockError, match=f"{MIRROR_ENV}: is not a directory"):
        mirror_root({MIRROR_ENV: str(tmp_path / "absent")})
    result = run_script(tmp_path, "--cache", str(tmp_path / "cache"), mirror=tmp_path / "absent")
    assert result.returncode == 2 and result.stderr == (
        f"error: {MIRROR_ENV}: is not a directory (got {str(tmp_path / 'absent')!r}); point it at a copy of ../shared\n"
    )


def test_make_names_the_mirror_beside_the_project_only_when_the_variable_is_unset(tmp_path):
    """The fallback to a ../shared beside the checkout is the Makefile's, not the fetch code's. The project's
    Makefile runs from a checkout of the test's own making, so what sits beside the real one plays no part."""
    makefile = SCRIPT.parent.parent / "Makefile"
    checkout = tmp_path / "checkout"
    checkout.mkdir()

    def fetch_line(env: dict[str, str]) -> str:
        dry = subprocess.run(
            ["make", "-n", "-f", str(makefile), "upstream"],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
        )
        [line] = [line for line in dry.stdout.splitlines() if "fetch_upstream.py" in line]
        return line

    base = {k: v for k, v in os.environ.items() if k != MIRROR_ENV}
    named = tmp_path / "named"
    assert f"{MIRROR_ENV}='{named}' " in fetch_line({**base, MIRROR_ENV: str(named)})
    assert f"{MIRROR_ENV}='' " in fetch_line(base)  # nothing beside: the fetch downloads
    # The folder name the Makefile looks for beside the checkout, as it spells it: the test lays one out.
    beside = re.search(r"\$\(wildcard \$\(abspath \.\.\)/([\w.-]+)\)", makefile.read_text()).group(1)
    (tmp_path / beside).mkdir()
    assert f"{MIRROR_ENV}='{tmp_path / beside}' " in fetch_line(base)
    assert f"{MIRROR_ENV}='{named}' " in fetch_line({**base, MIRROR_ENV: str(named)})  # the variable wins


def test_the_tests_read_nothing_from_a_cache_not_verified_against_the_lock(tmp_path, monkeypatch):
    lock = write_lock(
        tmp_path / "lock.json", [{"path": "crds/a.yaml", "url": CLOSED_PORT_URL, "sha256": sha(CRD)}]
    )
    cache = tmp_path / "cache"
    monkeypatch.setattr(upstream, "LOCK", lock)
    monkeypatch.setattr(upstream, "CACHE", cache)
    check = upstream.verified_cache.__wrapped__
    with pytest.raises(upstream.UpstreamCacheMissing, match="run `make upstream`"):
        check()
    cache.mkdir()
    (cache / STAMP).write_text(sha(b"an older lock"))
    with pytest.raises(upstream.UpstreamCacheMissing):
        check()
    (cache / STAMP).write_text(sha(lock.read_bytes()))
    assert check() == cache


COMMIT_URL = re.compile(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+")


def test_the_committed_lock_pins_every_chart_sgldeploy_installs_at_its_source_commit():
    lock = json.loads(fetch_upstream.LOCK.read_text())
    entries = fetch_upstream.read_lock(fetch_upstream.LOCK)
    for entry in entries:
        url = entry.archive.url if entry.archive else entry.url
        assert url is not None and COMMIT_URL.fullmatch(url), entry.path
    for directory, source in lock["charts"].items():
        values = next(e for e in entries if e.path == f"data/charts/{directory}/values.yaml")
        if values.url is not None:  # a blob at the chart's release commit, under the chart's path
            assert values.url == (
                f"https://raw.githubusercontent.com/{source['repo']}/{source['commit']}/{source['path']}/values.yaml"
            )
        else:  # only inside the published .tgz, whose digest is pinned too
            assert values.archive is not None and values.archive.sha256 is not None
            assert values.archive.member == f"{source['chart']}/values.yaml"
    installed = {f"{c.chart.rsplit('/', 1)[-1]}-{c.version}" for c in CHARTS}
    assert installed <= set(lock["charts"])
    assert sum(e.path.startswith("crds/") for e in entries) == 14
