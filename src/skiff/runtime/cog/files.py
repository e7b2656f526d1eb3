"""Moving files across the API: input URLs to local paths, output paths to URLs."""

from __future__ import annotations

import base64
import contextlib
import io
import mimetypes
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from typing import IO, Any

from .types import Path

_DOWNLOAD_TIMEOUT_S = 300


class FileError(Exception):
    """An input file could not be fetched or an output file could not be sent."""


def _filename_from_url(url: str, fallback: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path)
    name = urllib.parse.unquote(name)
    # Keep the name for the extension predictors often rely on, but never a path.
    return name.replace("/", "_").replace("\\", "_") or fallback


def _decode_data_uri(uri: str) -> tuple[bytes, str]:
    header, sep, payload = uri[len("data:") :].partition(",")
    if not sep:
        raise FileError("malformed data URI: no ',' separator")
    parts = header.split(";")
    mime = parts[0] or "text/plain"
    try:
        if "base64" in parts[1:]:
            data = base64.b64decode(payload, validate=False)
        else:
            data = urllib.parse.unquote_to_bytes(payload)
    except ValueError as e:
        raise FileError(f"malformed data URI: {e}") from None
    return data, mime


def fetch(location: str, workdir: str) -> Path:
    """Materialise an input file (URL, data URI or local path) inside ``workdir``."""
    if location.startswith("data:"):
        data, mime = _decode_data_uri(location)
        ext = mimetypes.guess_extension(mime) or ""
        target = os.path.join(tempfile.mkdtemp(dir=workdir), f"file{ext}")
        with open(target, "wb") as f:
            f.write(data)
        return Path(target)
    if location.startswith(("http://", "https://")):
        name = _filename_from_url(location, "file")
        request = urllib.request.Request(location, headers={"User-Agent": "skiff-cog-runtime"})
        try:
            with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
                if not os.path.splitext(name)[1]:
                    # Predictors often dispatch on the extension: take it from the type.
                    mime = resp.headers.get_content_type()
                    name += mimetypes.guess_extension(mime) or ""
                target = os.path.join(tempfile.mkdtemp(dir=workdir), name)
                with open(target, "wb") as f:
                    shutil.copyfileobj(resp, f)
        except OSError as e:
            host = urllib.parse.urlparse(location).netloc
            raise FileError(f"failed to download input file from {host}: {e}") from None
        return Path(target)
    path = os.path.abspath(os.path.expanduser(location))
    if not os.path.isfile(path):
        raise FileError(f"input file not found: {location}")
    return Path(path)


def guess_mime(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def data_uri(data: bytes, name: str) -> str:
    return f"data:{guess_mime(name)};base64,{base64.b64encode(data).decode('ascii')}"


def _read_fileobj(fileobj: IO[Any]) -> tuple[bytes, str]:
    data = fileobj.read()
    if isinstance(data, str):
        data = data.encode()
    return data, os.path.basename(str(getattr(fileobj, "name", "output")))


def discard_if_temporary(path: str) -> None:
    """Cog deletes returned files once sent; only temp files, never the model's own."""
    tmp = os.path.realpath(tempfile.gettempdir())
    real = os.path.realpath(path)
    if os.path.commonpath([tmp, real]) == tmp and real != tmp:
        with contextlib.suppress(OSError):
            os.unlink(real)


class OutputFiles:
    """Turns output files into data URIs, or uploads them (PUT) when an upload URL is set."""

    def __init__(self, upload_url: str | None = None) -> None:
        self.upload_url = upload_url

    def encode(self, value: Any, prefix: str | None = None) -> str:
        base = prefix or self.upload_url
        if not isinstance(value, os.PathLike):
            data, name = _read_fileobj(value)
            return (
                self._upload(base, io.BytesIO(data), len(data), name)
                if base
                else (data_uri(data, name))
            )
        path = os.fspath(value)
        name = os.path.basename(path)
        try:
            if not base:
                with open(path, "rb") as f:
                    return data_uri(f.read(), name)
            with open(path, "rb") as f:  # streamed: outputs can be larger than memory
                return self._upload(base, f, os.path.getsize(path), name)
        finally:
            discard_if_temporary(path)

    def _upload(self, base: str, body: IO[bytes], size: int, name: str) -> str:
        url = base.rstrip("/") + "/" + urllib.parse.quote(name)
        request = urllib.request.Request(
            url,
            data=body,
            method="PUT",
            headers={"Content-Type": guess_mime(name), "Content-Length": str(size)},
        )
        try:
            with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
                location: str | None = resp.headers.get("Location")
        except OSError as e:
            host = urllib.parse.urlparse(url).netloc
            raise FileError(f"failed to upload output file to {host}: {e}") from None
        if location:
            return urllib.parse.urljoin(url, location)
        # Signed URLs carry credentials in the query: never hand them back.
        return urllib.parse.urlunparse(urllib.parse.urlparse(url)._replace(query=""))


def is_file_output(value: Any) -> bool:
    return isinstance(value, (os.PathLike, io.IOBase))
