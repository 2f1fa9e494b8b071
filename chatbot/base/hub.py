"""Where a base model's files are: a local folder, or a Hugging Face hub id fetched into the HF cache.

Only the base model is ever downloaded; chat data never leaves the machine. ``HF_HOME`` / ``HF_HUB_CACHE`` and
``HF_HUB_OFFLINE`` are honoured by huggingface_hub itself; a cached snapshot is used without network.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..errors import ChatbotError

# what a causal LM needs to load; everything else in a repo (other weight formats, images, ...) is skipped
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.py", "*.jinja"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def resolve_base(base: str, revision: str = "", *, root: Path | None = None, weights: bool = True) -> Path:
    """The local folder holding ``base``: a folder (absolute, or relative to ``root``), or a hub snapshot.

    A hub id is downloaded (progress bar on the terminal) unless already cached; offline, an unknown id or a
    missing revision is one line. Raises ChatbotError when the folder lacks config.json or weights.
    ``weights=False`` (preprocess: only the tokenizer is needed) fetches and requires everything but the weights.
    """
    base = base.strip()
    if not base:
        raise ChatbotError("model.base is empty: nothing to resolve")
    path = Path(base).expanduser()
    if not path.is_absolute() and root is not None:
        path = root / path
    if path.exists() or not _HUB_ID.match(base):
        if not path.is_dir():
            raise ChatbotError(f"model.base folder {path} does not exist (give a folder with config.json, "
                               f"*.safetensors and tokenizer files, or a Hugging Face id like Qwen/Qwen2.5-0.5B-Instruct)")
        return check_base_dir(path, weights=weights)
    return check_base_dir(_download(base, revision, weights=weights), weights=weights)


def check_base_dir(path: Path, *, weights: bool = True) -> Path:
    if not (path / "config.json").is_file():
        raise ChatbotError(f"model.base folder {path} has no config.json; it must hold a Hugging Face model "
                           f"(config.json, *.safetensors, tokenizer files)")
    if weights and not weight_files(path):
        raise ChatbotError(f"model.base folder {path} has no *.safetensors weights (only safetensors are loaded)")
    return path


def find_local(base: str, revision: str = "", *, root: Path | None = None) -> tuple[Path | None, str]:
    """(folder, note) without any network: the folder or the cached hub snapshot when its files are all present,
    else (None, what is missing). For ``status``."""
    path = Path(base).expanduser()
    if not path.is_absolute() and root is not None:
        path = root / path
    if path.exists() or not _HUB_ID.match(base):
        try:
            return check_base_dir(path), "local folder"
        except ChatbotError as exc:
            return None, str(exc)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None, "huggingface_hub is not installed"
    try:
        got = Path(snapshot_download(base, revision=revision or None, allow_patterns=ALLOW_PATTERNS,
                                     local_files_only=True))
        return check_base_dir(got), "in the Hugging Face cache"
    except Exception:  # not cached (or only partly): any error here means "not usable offline"
        return None, "not downloaded yet (train or preprocess downloads it)"


def _download(repo_id: str, revision: str, *, weights: bool = True) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf_errors

    what = repo_id + (f"@{revision}" if revision else "")
    try:
        got = snapshot_download(repo_id, revision=revision or None, allow_patterns=ALLOW_PATTERNS if weights else
                                [p for p in ALLOW_PATTERNS if p != "*.safetensors"])
    except hf_errors.GatedRepoError:
        raise ChatbotError(f"{what} is gated on the Hugging Face hub: accept its license on the website and log in "
                           f"with `hf auth login`, or choose another base") from None
    except hf_errors.RepositoryNotFoundError:
        raise ChatbotError(f"no model {repo_id} on the Hugging Face hub (check model.base for typos)") from None
    except hf_errors.RevisionNotFoundError:
        raise ChatbotError(f"{repo_id} has no revision {revision!r} (check model.base_revision)") from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled):
        raise ChatbotError(f"cannot download {what}: no network (or HF_HUB_OFFLINE=1) and it is not in the "
                           f"Hugging Face cache; connect once, or point model.base at a local folder") from None
    except hf_errors.HfHubHTTPError as exc:
        code = getattr(getattr(exc, "response", None), "status_code", None)
        raise ChatbotError(f"downloading {what} failed (HTTP {code or 'error'}); try again later or point "
                           f"model.base at a local folder") from None
    except OSError as exc:
        raise ChatbotError(f"downloading {what} failed ({type(exc).__name__}: {exc.strerror or exc}); check the "
                           f"disk space and the network") from None
    return Path(got)


def weight_files(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("*.safetensors") if p.is_file())


def base_weight_hash(path: str | Path) -> str:
    """sha256 hex identifying the weights of a base folder (the checkpoint stores it; resume compares it).

    = sha256 of "<file name> <sha256 of file>\\n" per ``*.safetensors`` file, sorted by name. A file in the hub
    cache is a link to ``blobs/<sha256 of its content>``, so the name is used instead of reading gigabytes again.
    """
    path = Path(path)
    lines = []
    for f in weight_files(path):
        real = f.resolve()
        digest = real.name if real.parent.name == "blobs" and _SHA256.match(real.name) else _sha256(real)
        lines.append(f"{f.name} {digest}\n")
    if not lines:
        raise ChatbotError(f"model.base folder {path} has no *.safetensors weights")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def count_parameters(path: str | Path) -> int:
    """Number of weights in a base folder, read from the safetensors headers (no tensor is loaded)."""
    total = 0
    for f in weight_files(Path(path)):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > 100_000_000:
                raise ChatbotError(f"{f.name} in model.base is not a valid safetensors file")
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for d in info["shape"]:
                    count *= int(d)
                total += count
    return total
