"""Safe file writing and reading: atomic replace, sha256, and model weights without pickle."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from securegaze.errors import InputFileError
from securegaze.json_codec import to_json


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write)


def write_generated_section(path: str | os.PathLike, text: str, name: str) -> Path:
    """Write ``text`` into the generated section ``name`` of a Markdown file, atomically.

    The section lies between ``<!-- begin generated: NAME -->`` and ``<!-- end generated: NAME -->``;
    what the file holds outside it (prose written after a run, earlier runs) is kept. A file without
    the section gets it at the top, above its old content; a missing file is created.
    """
    begin, end = f"<!-- begin generated: {name} -->", f"<!-- end generated: {name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    start, stop = old.find(begin), old.find(end)
    if start >= 0 and stop > start:
        after = old[stop + len(end):].lstrip("\n")
        new = old[:start] + block + ("\n" + after if after else "")
    elif start >= 0 or stop >= 0:
        raise InputFileError(f"{path}: the generated section {name!r} has only one of its two markers; "
                             f"expected {begin!r} before {end!r}")
    else:
        new = block + ("\n" + old if old else "")
    return atomic_write_bytes(path, new.encode("utf-8"))


def check_output_file(path: str | os.PathLike, option: str, what: str = "the output") -> Path:
    """``path`` may be written as a file: not a folder, in a folder that exists. Checked before the
    work that produces the file, so a long run never ends in an unwritable path (InputFileError
    naming ``option``, e.g. ``--summary``)."""
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"{option} {path}: is a folder; expected a file for {what}")
    if not path.parent.is_dir():
        raise InputFileError(f"{option} {path}: folder {path.parent} does not exist; expected a file in an existing folder")
    return path


def check_output_dir(path: str | os.PathLike, option: str, what: str, files: tuple[str, ...] = (),
                     folders: tuple[str, ...] = ()) -> Path:
    """``path`` may be written as a folder of outputs (checked before the work, like
    :func:`check_output_file`): not a file; a missing folder must be creatable (its nearest existing
    ancestor a writable folder); none of ``files`` inside it a folder and none of ``folders`` a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputFileError(f"{option} {path}: is a file; expected a folder for {what}")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputFileError(f"{option} {path}: {ancestor} is a file, so the folder for {what} cannot be created there")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputFileError(f"{option} {path}: folder {ancestor} is not writable; expected a folder for {what}")
    for name in files:
        if (path / name).is_dir():
            raise InputFileError(f"{option} {path}: {path / name} is a folder; {what} writes a file of that name")
    for name in folders:
        if (path / name).exists() and not (path / name).is_dir():
            raise InputFileError(f"{option} {path}: {path / name} is a file; {what} writes a folder of that name")
    return path


def shown(path: str | os.PathLike) -> str:
    """``path`` as text that prints and stores anywhere: its bytes read as UTF-8, any that are not
    escaped (a Latin-1 name ``b"caf\\xe9.png"`` shows as ``caf\\xe9.png``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_outside(path: str | os.PathLike, option: str, source: str, source_option: str) -> None:
    """Refuse an output folder ``path`` that lies in the input folder ``source`` (or is it): what is
    written there (a scan's trigger picture, a bundle) would be read as input by the next run, and the
    folder's identity in audit records would change. ``source`` that is not a folder (``synthetic``, a
    file) is never in the way."""
    if not os.path.isdir(source):
        return
    out, folder = Path(path).resolve(), Path(source).resolve()
    if out == folder or folder in out.parents:
        raise InputFileError(f"{option} {path}: lies inside {source_option} {source}, whose images are read "
                             "as input; write the results outside that folder (the next run would read them "
                             "as faces)")


#: Sentences of torch's refusal of a pickled object that advise loading it anyway (``weights_only``
#: off, allow-listing its classes): never passed on to the user of a file refused as unsafe.
_UNSAFE_ADVICE = re.compile(r"weights_only|trust|re-running|arbitrary code|file an issue|documentation|two options|"
                            r"alternatively|safe_globals|allowlist", re.IGNORECASE)


def unpickling_refusal(exc: BaseException) -> str:
    """What ``torch.load(..., weights_only=True)``'s refusal says is wrong with a file (e.g.
    "Unsupported global: GLOBAL posix.system ..."), in one line without torch's advice on how to
    load the file unsafely; any other error's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            if rest:
                return rest.split(". ")[0].strip().rstrip(".")
        if line.startswith("Trying to load unsupported"):
            return line.rstrip(".")
    sentences = [s.strip() for line in lines for s in re.split(r"(?<=\.)\s+", line) if s.strip()]
    kept = [s for s in sentences if not _UNSAFE_ADVICE.search(s)]
    return kept[0].rstrip(".") if kept else "it holds objects that only unpickling could build"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as strict JSON (the project's codec: non-finite floats as "nan" / "inf"), atomically."""
    text = json.dumps(to_json(obj), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode())


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path}: not a readable {what} ({exc})") from None


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """The parsed YAML file at ``path`` (``yaml.safe_load``: no Python objects are ever built).

    ``what`` names the file in the error lines: "<path>: <what> file not found" and "<path>: not a
    readable YAML <what> (<first line of the parser's message>)", both :class:`InputFileError`.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(f"{path}: not a readable YAML {what} ({first})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    return hash_file_into(hashlib.sha256(), path, chunk).hexdigest()


def hash_file_into(digest, path: str | os.PathLike, chunk: int = 1 << 20):
    """``digest`` (a hashlib object) updated with the bytes of ``path``, read a chunk at a time; returned."""
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    The safetensors writer keeps the metadata in a hash map, so two saves of the same tensors and
    metadata can order the header's keys differently from one process to the next: same weights,
    different bytes, and a published sha256 that a rerun cannot reproduce. The tensor bytes and their
    offsets are untouched; the header is padded with spaces to a multiple of 8 bytes as the format
    asks."""
    if len(data) < 8:
        raise ValueError("not a safetensors file: shorter than its 8-byte header length")
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    meta = header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}
    ordered.update(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Torch tensors as safetensors (no pickle), atomically, with a canonical header: the same
    tensors and metadata always give the same bytes."""
    from safetensors.torch import save as save_bytes

    return atomic_write_bytes(path, canonical_safetensors(save_bytes(tensors, metadata=metadata)))


def save_weights(model, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Model weights as safetensors (no pickle), with the model config as JSON metadata."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(model.config())}
    if metadata:
        meta.update({k: json.dumps(v) for k, v in metadata.items()})
    return save_safetensors(state, path, meta)


def load_weights(path: str | os.PathLike):
    """Rebuild a :class:`GazeModel` from a safetensors file written by :func:`save_weights`."""
    from safetensors import SafetensorError, safe_open

    from securegaze.models import model_from_config

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: model weights file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputFileError(f"{path}: not a readable safetensors weights file ({exc})") from None
    if "config" not in meta:
        raise InputFileError(f"{path}: safetensors file has no 'config' metadata; expected one written by securegaze")
    model = model_from_config(json.loads(meta["config"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputFileError(
            f"{path}: weights do not fit the {model.architecture} architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    return model
