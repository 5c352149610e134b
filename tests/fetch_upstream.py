"""Fetch the upstream files the tests read (CRDs, the pinned charts' default values) into .cache/upstream/,
each verified against the sha256 that tests/upstream.lock.json pins.

Each file comes, in this order, from the cache when already there and intact; from a local mirror laid out as
../shared is (`crds/`, `data/charts/`), named by SGLDEPLOY_UPSTREAM_MIRROR (the Makefile names ../shared there
when it exists and the variable is unset); else from its upstream URL (a file at a commit, or a member of a published chart .tgz).
Every file is written to a temporary file, verified, then renamed; the stamp `lock.sha256` is written last,
only when every file is verified, and tests/upstream.py reads nothing without it. Files the lock no longer
names are removed, so a test cannot read one the lock does not pin.

Exit status: 0 every file verified; 1 a file could not be fetched or failed its hash (one line each, naming
it); 2 the lock or SGLDEPLOY_UPSTREAM_MIRROR is unusable. Standard library only: it runs before any venv.

    python tests/fetch_upstream.py [--lock FILE] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "tests" / "upstream.lock.json"
CACHE = ROOT / ".cache" / "upstream"
MIRROR_ENV = "SGLDEPLOY_UPSTREAM_MIRROR"
STAMP = "lock.sha256"  # the sha256 of the lock the cache was verified against
DOWNLOAD_TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # the largest pinned file is under 2 MiB; a chart .tgz well under this


class FetchError(Exception):
    """One file that could not be fetched or verified: the message is its whole line."""


class LockError(Exception):
    """The lock itself is unusable."""


@dataclass(frozen=True)
class Archive:
    """A published archive (a chart's .tgz) and the member holding the file."""

    url: str
    sha256: str | None  # the archive's digest where the publisher lists one (a chart index's `digest`)
    member: str


@dataclass(frozen=True)
class Pinned:
    """One upstream file: where it lies in the cache and a mirror, where it comes from, its sha256."""

    path: str
    sha256: str
    url: str | None
    archive: Archive | None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _safe_relative(path: object) -> bool:
    if not isinstance(path, str) or not path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _entry(index: int, raw: object) -> Pinned:
    where = f"files[{index}]"
    if not isinstance(raw, dict):
        raise LockError(f"{where}: is not an object (got {raw!r})")
    path, sha, url, archive = raw.get("path"), raw.get("sha256"), raw.get("url"), raw.get("archive")
    if not _safe_relative(path):
        raise LockError(f"{where}.path: is not a relative path inside the cache (got {path!r})")
    if not _hex64(sha):
        raise LockError(f"{where}.sha256: is not 64 lowercase hex digits (got {sha!r})")
    if (url is None) == (archive is None):
        raise LockError(f"{where}: needs exactly one of url and archive (got {sorted(raw)})")
    if url is not None and not (isinstance(url, str) and url.startswith(("https://", "http://"))):
        raise LockError(f"{where}.url: is not an http(s) URL (got {url!r})")
    found = None
    if archive is not None:
        if not isinstance(archive, dict) or not isinstance(archive.get("url"), str):
            raise LockError(f"{where}.archive: needs url and member (got {archive!r})")
        digest = archive.get("sha256")
        if digest is not None and not _hex64(digest):
            raise LockError(f"{where}.archive.sha256: is not 64 lowercase hex digits (got {digest!r})")
        member = archive.get("member")
        if not _safe_relative(member):
            raise LockError(f"{where}.archive.member: is not a path inside the archive (got {member!r})")
        found = Archive(url=archive["url"], sha256=digest, member=str(member))
    return Pinned(path=str(path), sha256=str(sha), url=url, archive=found)


def read_lock(lock: Path) -> list[Pinned]:
    try:
        data = json.loads(lock.read_text())
    except (OSError, ValueError) as e:
        raise LockError(f"is not a readable JSON lock ({e})") from e
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not files:
        raise LockError("files: is not a non-empty list")
    entries = [_entry(i, raw) for i, raw in enumerate(files)]
    seen: set[str] = set()
    for entry in entries:
        if entry.path in seen:
            raise LockError(f"files: pins {entry.path} twice")
        seen.add(entry.path)
    return entries


def mirror_root(environ: Mapping[str, str]) -> Path | None:
    """The mirror SGLDEPLOY_UPSTREAM_MIRROR names (it must exist), else none: files are then downloaded."""
    named = environ.get(MIRROR_ENV)
    if not named:
        return None
    if not Path(named).is_dir():
        raise LockError(f"{MIRROR_ENV}: is not a directory (got {named!r}); point it at a copy of ../shared")
    return Path(named)


def download(url: str, timeout_s: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        if isinstance(e, urllib.error.HTTPError):
            reason: object = f"HTTP {e.code} {e.reason}"
        else:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise FetchError(f"could not download {url} ({reason})") from e
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise FetchError(f"{url} is over {MAX_DOWNLOAD_BYTES} bytes")
    return data


def from_archive(archive: Archive, timeout_s: float) -> bytes:
    data = download(archive.url, timeout_s)
    if archive.sha256 is not None and sha256_of(data) != archive.sha256:
        raise FetchError(f"{archive.url} has sha256 {sha256_of(data)}, the lock pins {archive.sha256}")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            member = tar.extractfile(archive.member)
            if member is None:
                raise FetchError(f"{archive.url}: {archive.member} is not a regular file")
            return member.read()
    except KeyError as e:
        raise FetchError(f"{archive.url} has no member {archive.member}") from e
    except tarfile.TarError as e:
        raise FetchError(f"{archive.url} is not a readable archive ({e})") from e


def upstream_name(entry: Pinned) -> str:
    if entry.archive is not None:
        return f"{entry.archive.url} member {entry.archive.member}"
    return str(entry.url)


def from_upstream(entry: Pinned, timeout_s: float) -> bytes:
    if entry.archive is not None:
        return from_archive(entry.archive, timeout_s)
    assert entry.url is not None  # read_lock: exactly one of url and archive
    return download(entry.url, timeout_s)


def write_atomically(target: Path, data: bytes) -> None:
    """Written beside the target, then renamed: a reader sees the old file or the whole new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
        tmp.write(data)
    try:
        os.chmod(tmp.name, 0o644)  # NamedTemporaryFile makes it owner-only; readable as a checkout is
        os.replace(tmp.name, target)
    except OSError:
        os.unlink(tmp.name)
        raise


def fetch_one(entry: Pinned, cache: Path, mirror: Path | None, timeout_s: float) -> str:
    """Put one verified file in the cache; says where it came from. FetchError: one line naming the file."""
    target = cache / entry.path
    if target.is_file() and sha256_of(target.read_bytes()) == entry.sha256:
        return "cached"
    mirrored = mirror / entry.path if mirror is not None else None
    if mirrored is not None and mirrored.is_file():
        data, origin, what = mirrored.read_bytes(), "mirror", f"the mirror's copy {mirrored}"
    else:
        absent = f"not in the mirror {mirror}" if mirror is not None else "no mirror"
        try:
            data = from_upstream(entry, timeout_s)
        except FetchError as e:
            raise FetchError(
                f"error: {entry.path}: {absent} and {e}; set {MIRROR_ENV} to a copy of ../shared or go online"
            ) from e
        origin, what = "downloaded", upstream_name(entry)
    found = sha256_of(data)
    if found != entry.sha256:
        raise FetchError(
            f"error: {entry.path}: sha256 of {what} is {found}, the lock pins {entry.sha256}; "
            "the file changed upstream or in the mirror: check it, then re-pin it in tests/upstream.lock.json"
        )
    try:
        write_atomically(target, data)
    except OSError as e:
        raise FetchError(
            f"error: {entry.path}: could not write {target} ({e}); check the cache's disk"
        ) from e
    return origin


def prune(cache: Path, keep: set[str]) -> None:
    """Remove files the lock does not pin (a CRD dropped from it must not stay readable)."""
    for path in sorted(cache.rglob("*"), reverse=True):
        relative = path.relative_to(cache).as_posix()
        if path.is_file() and relative != STAMP and relative not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def fetch_all(
    lock: Path, cache: Path, mirror: Path | None, timeout_s: float = DOWNLOAD_TIMEOUT_S
) -> tuple[dict[str, int], list[str]]:
    """Fetch every pinned file: (count per origin, one problem line per file that failed)."""
    entries = read_lock(lock)
    stamp = cache / STAMP
    stamp.unlink(missing_ok=True)  # until every file is verified again, the tests read nothing
    counts: dict[str, int] = {}
    problems = []
    for entry in entries:
        try:
            origin = fetch_one(entry, cache, mirror, timeout_s)
        except FetchError as e:
            problems.append(str(e))
            continue
        counts[origin] = counts.get(origin, 0) + 1
    prune(cache, {entry.path for entry in entries})
    if not problems:
        write_atomically(stamp, sha256_of(lock.read_bytes()).encode())
    return counts, problems


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--lock", type=Path, default=LOCK, help="the lock of upstream files")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the verified files go")
    args = parser.parse_args(argv)
    try:
        mirror = mirror_root(environ)
    except LockError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        counts, problems = fetch_all(args.lock, args.cache, mirror)
    except LockError as e:
        print(f"error: {args.lock}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the cache itself (the stamp, a directory) cannot be written
        print(f"error: {args.cache}: could not write ({e}); check the cache's disk", file=sys.stderr)
        return 1
    for line in problems:
        print(line, file=sys.stderr)
    done = ", ".join(f"{n} {origin}" for origin, n in sorted(counts.items())) or "none"
    source = f"mirror {mirror}" if mirror is not None else "no mirror"
    verdict = f"{len(problems)} failed" if problems else "all verified"
    print(f"upstream: {sum(counts.values())} files in {args.cache} ({done}; {source}); {verdict}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
