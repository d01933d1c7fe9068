"""Result files by URL: the file origin's lookup, and the input images of edit models.

An edit model downloads its input images (and mask) when it runs. The emulator does the
same, but only from its **own** file origin, and without any network request: a URL there is
looked up as the file origin would answer it (path, signature, expiry), and the file is the
artifact it names. Any other URL (another host, another port, a scheme other than http(s))
is refused as the provider's download would have failed, in the wording the image editing
reference shows: ``"... 403 Client Error: Forbidden for url: ..."``. So an emulator never
fetches anything from the outside world, whatever a request asks for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Protocol
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from ._jobs import Artifact, Inputs
from ._spec import ModelSpec

__all__ = ["FileStore", "InputRefusedError", "find_file", "resolve_inputs"]

_FILE_PATH: Final = re.compile(r"/files/([^/]+)/([0-9a-fA-F-]{36})\.([a-z0-9]+)")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_REASONS: Final = {403: "Forbidden", 404: "Not Found"}
_MAX_URL_IN_MESSAGE: Final = 500


class FileStore(Protocol):
    """What looking a file up needs (an `EmulatorState` is one)."""

    @property
    def files_origin(self) -> str:
        """The file origin, ``scheme://host[:port]``."""
        ...

    def artifact(self, generation_id: str) -> Artifact | None:
        """A result file by generation id."""
        ...

    def signature_ok(self, artifact: Artifact, expires: str, signature: str) -> bool:
        """Whether a URL's ``expires`` and ``signature`` are this artifact's, and unexpired."""
        ...


def find_file(
    store: FileStore, raw_path: str, query: Mapping[str, str]
) -> tuple[int, Artifact | None]:
    """What the file origin answers for a path and query: ``(200, artifact)``, ``(404,
    None)`` for no such file, or ``(403, None)`` for a missing, wrong or expired signature.

    Args:
        store: Where the files are.
        raw_path: The URL's path, still percent-encoded.
        query: The URL's query parameters.
    """
    match = _FILE_PATH.fullmatch(raw_path)
    artifact = None
    if match is not None:
        namespace, generation_id, extension = match.groups()
        artifact = store.artifact(generation_id.lower())
        if artifact is not None and (
            artifact.namespace != unquote(namespace) or artifact.output.extension != extension
        ):
            artifact = None
    if artifact is None:
        return 404, None
    if not store.signature_ok(artifact, query.get("expires", ""), query.get("signature", "")):
        return 403, None
    return 200, artifact


class InputRefusedError(Exception):
    """An input image the model could not download (or could not read as an image).

    ``str()`` of it is the message: the ``error_message`` of a queued job, the body of a
    synchronous endpoint's 400.
    """


def resolve_inputs(store: FileStore, model: ModelSpec, params: Mapping[str, object]) -> Inputs:
    """The files a job's input-image URLs name, as the model would download them.

    The first parameter of ``model.image_inputs`` holds the images (a URL or an array of
    URLs); a second one, if any, the mask (one URL). Types are assumed checked already.

    Raises:
        InputRefusedError: A URL is not on the emulator's file origin, names no file, has a
            bad or expired signature, or names a video.
    """
    if not model.image_inputs:
        return Inputs()
    images_name, *rest = model.image_inputs
    value = params.get(images_name)
    urls = value if isinstance(value, list) else [] if value is None else [value]
    images = tuple(_download(store, images_name, url) for url in urls)
    mask = None
    if rest and params.get(rest[0]) is not None:
        mask = _download(store, rest[0], params[rest[0]])
    return Inputs(images, mask)


def _download(store: FileStore, name: str, url: object) -> Artifact:
    """The artifact a URL names, as an HTTP client on the file origin would get it."""
    if not isinstance(url, str):
        raise InputRefusedError(f"Getting model response error: 422 - {name}: must be a URL")
    try:
        parts = urlsplit(url)
        own = _same_origin(parts.scheme, parts.hostname, _port(parts), store.files_origin)
    except ValueError:  # not a URL at all (an unclosed IPv6 bracket, say)
        own = False
    if not own:
        # INFERRED wording before the "...": the edit reference shows only the end,
        # requests' HTTPError text. A foreign host is refused as a forbidden download.
        raise InputRefusedError(_download_error(name, 403, url))
    status, artifact = find_file(store, parts.path, dict(parse_qsl(parts.query)))
    if artifact is None:
        raise InputRefusedError(_download_error(name, status, url))
    if artifact.output.media_type != "image":
        raise InputRefusedError(
            f"Getting model response error: 422 - {name}: {_shorten(url)} is not an image"
        )
    return artifact


def _download_error(name: str, status: int, url: str) -> str:
    return (
        f"Failed to download {name}: {status} Client Error: {_REASONS[status]} "
        f"for url: {_shorten(url)}"
    )


def _shorten(url: str) -> str:
    return url if len(url) <= _MAX_URL_IN_MESSAGE else url[:_MAX_URL_IN_MESSAGE] + "..."


def _port(parts: SplitResult) -> int | None:
    try:
        port: int | None = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return -1
    return port if port is not None else _DEFAULT_PORTS.get(parts.scheme.lower())


def _same_origin(scheme: str, host: str | None, port: int | None, origin: str) -> bool:
    own = urlsplit(origin)
    return (
        scheme.lower() in _DEFAULT_PORTS
        and scheme.lower() == own.scheme.lower()
        and host is not None
        and host.lower() == (own.hostname or "").lower()
        and port == _port(own)
    )
