"""Content digests of model weights, so a checkpoint resumes only onto the same base.

fetch records the digest once, beside the weights (`weights.sha256`), so train does not
hash a few hundred MB at every start; a base folder without the record is hashed then.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST_FILE = "weights.sha256"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def hash_weights(folder: str | Path) -> str:
    """sha256 over the weights files' names and bytes, in name order."""
    digest = hashlib.sha256()
    files = sorted(p for pattern in WEIGHT_PATTERNS for p in Path(folder).glob(pattern))
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def record_weights_digest(folder: str | Path) -> str:
    """Hash `folder`'s weights and write the digest into it; return the digest."""
    value = hash_weights(folder)
    (Path(folder) / DIGEST_FILE).write_text(value + "\n")
    return value


def weights_digest(folder: str | Path) -> str:
    """The recorded digest of `folder`'s weights, else a fresh hash of them."""
    record = Path(folder) / DIGEST_FILE
    if record.is_file():
        return record.read_text().strip()
    return hash_weights(folder)
