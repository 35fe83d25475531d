"""Stand-in for the Cover Art Archive, speaking the documented subset of its API.

Not the archive: a local test server answering ``GET /release/{mbid}/front`` (and the
``front-250``, ``front-500``, ``front-1200`` thumbnails) with a 307 redirect to the image's
address, as the archive does, and 404 for a release it does not know. The image is served from
``/images/{mbid}-{size}``. ``png_image`` makes a small real PNG to serve.
"""

from __future__ import annotations

import re
import struct
import zlib

from tests.standins import LoggedRequest, Reply, StandinServer, json_reply

__all__ = ["CoverArtStandin", "png_image"]

_FRONT = re.compile(r"/release/([0-9A-Za-z-]+)/(front(?:-250|-500|-1200)?)")
_IMAGE = re.compile(r"/images/([0-9A-Za-z-]+)-(front(?:-250|-500|-1200)?)")


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_image(width: int = 4, height: int = 4, rgb: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A valid PNG of one colour (8-bit RGB)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * height))
        + _chunk(b"IEND", b"")
    )


class CoverArtStandin(StandinServer):
    def __init__(self, covers: dict[str, bytes] | None = None) -> None:
        """`covers`: release mbid -> the bytes served as its front image (any bytes, so a
        test can serve something that is not an image)."""
        super().__init__()
        self.covers = dict(covers or {})

    def handle(self, request: LoggedRequest) -> Reply:
        if request.method != "GET":
            return json_reply(405, {"error": "Method not allowed"})
        if match := _FRONT.fullmatch(request.path):
            mbid, size = match.groups()
            if mbid not in self.covers:
                return Reply(404, b"No cover art found for release", {"Content-Type": "text/plain"})
            location = f"{self.base_url}/images/{mbid}-{size}"
            return Reply(307, b"See: " + location.encode(), {"Location": location})
        if match := _IMAGE.fullmatch(request.path):
            image = self.covers.get(match.group(1))
            if image is None:
                return Reply(404, b"Not Found", {"Content-Type": "text/plain"})
            kind = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
            return Reply(200, image, {"Content-Type": kind})
        return Reply(404, b"Not Found", {"Content-Type": "text/plain"})
