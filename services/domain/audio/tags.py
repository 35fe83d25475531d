"""An audio file's tags under one spelling, whatever its container stores.

Tag names are normalised to lower-case keys (title, artist, album, albumartist, tracknumber,
discnumber, date, isrc, musicbrainz_trackid, genre): ID3 frames (MP3, WAV, AIFF), Vorbis
comments (FLAC, Ogg Vorbis, Opus) or MP4 atoms. Reading and writing go through the same table,
so what the metadata module writes is what every reader (downloads, the library, folders)
reads back. Works on mutagen's plain (not "easy") tag objects. The front cover picture goes
the same way for every container (`set_front_cover`, `front_cover`): an ID3 APIC frame, a FLAC
picture block, an MP4 covr atom, or a Vorbis comment METADATA_BLOCK_PICTURE (base64 of a FLAC
picture block, as Ogg Vorbis and Opus keep it).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from mutagen import flac as _flac
from mutagen import id3 as _id3
from mutagen import mp4 as _mp4

__all__ = ["TAG_KEYS", "front_cover", "read_tags", "set_front_cover", "set_tag"]

# mutagen ships py.typed but leaves the tag classes' methods unannotated, which strict mypy
# rejects at every call; the tag modules are used through Any instead.
id3: Any = _id3
mp4: Any = _mp4
flac: Any = _flac

# The picture type of a front cover in ID3 APIC frames and FLAC picture blocks alike.
FRONT_COVER = 3
_VORBIS_PICTURE = "metadata_block_picture"

# The normalised tag names, in the order they are reported.
TAG_KEYS: tuple[str, ...] = (
    "title",
    "artist",
    "album",
    "albumartist",
    "tracknumber",
    "discnumber",
    "date",
    "isrc",
    "musicbrainz_trackid",
    "genre",
)


_ID3_TEXT: dict[str, str] = {
    "title": "TIT2",
    "artist": "TPE1",
    "album": "TALB",
    "albumartist": "TPE2",
    "tracknumber": "TRCK",
    "discnumber": "TPOS",
    "date": "TDRC",
    "isrc": "TSRC",
    "genre": "TCON",
}
_MB_UFID_OWNER = "http://musicbrainz.org"  # where Picard and EasyID3 keep the recording id

_MP4_TEXT: dict[str, str] = {
    "title": "\xa9nam",
    "artist": "\xa9ART",
    "album": "\xa9alb",
    "albumartist": "aART",
    "date": "\xa9day",
    "genre": "\xa9gen",
}
_MP4_FREEFORM: dict[str, str] = {
    "isrc": "----:com.apple.iTunes:ISRC",
    "musicbrainz_trackid": "----:com.apple.iTunes:MusicBrainz Track Id",
}
_MP4_PAIRS: dict[str, str] = {"tracknumber": "trkn", "discnumber": "disk"}


def read_tags(tags: Any) -> dict[str, str]:
    """The normalised tags (TAG_KEYS) mutagen's `tags` object holds, empty ones left out."""
    out: dict[str, str] = {}
    if tags is None:
        return out
    for key in TAG_KEYS:
        try:
            value = _get(tags, key)
        except (KeyError, ValueError, TypeError, IndexError):
            value = ""  # a damaged frame or an unexpected value: as if the tag were absent
        if value:
            out[key] = value
    return out


def _get(tags: Any, key: str) -> str:
    if isinstance(tags, id3.ID3):
        if key == "musicbrainz_trackid":
            frame = tags.get(f"UFID:{_MB_UFID_OWNER}")
            return bytes(frame.data).decode("ascii", "replace") if frame is not None else ""
        frame = tags.get(_ID3_TEXT[key])
        if frame is None or not frame.text:
            return ""
        if key == "genre":
            # TCON may hold ID3v1 references such as "(17)": `genres` names them ("Rock").
            genres = list(frame.genres)
            return str(genres[0]).strip() if genres else ""
        return str(frame.text[0]).strip()
    if isinstance(tags, mp4.MP4Tags):
        if key in _MP4_TEXT:
            values = tags.get(_MP4_TEXT[key]) or []
            return str(values[0]).strip() if values else ""
        if key in _MP4_FREEFORM:
            values = tags.get(_MP4_FREEFORM[key]) or []
            return bytes(values[0]).decode("utf-8", "replace").strip() if values else ""
        # (number, total): read as "3/12" or "3", as Vorbis comments and ID3 keep them.
        pairs = tags.get(_MP4_PAIRS[key]) or []
        if not pairs or not pairs[0][0]:
            return ""
        number, total = pairs[0][0], pairs[0][1] if len(pairs[0]) > 1 else 0
        return f"{number}/{total}" if total else str(number)
    # Vorbis comments: case-insensitive keys, lists of strings (APEv2 values alike).
    values = tags.get(key)
    if not values:
        return ""
    return str(values[0] if isinstance(values, list) else values).strip()


def set_tag(tags: Any, key: str, value: str) -> None:
    """Set one normalised tag (a TAG_KEYS name) in mutagen's `tags` object."""
    if isinstance(tags, id3.ID3):
        if key == "musicbrainz_trackid":
            tags.delall(f"UFID:{_MB_UFID_OWNER}")
            tags.add(id3.UFID(owner=_MB_UFID_OWNER, data=value.encode("ascii", "replace")))
            return
        frame_id = _ID3_TEXT[key]
        tags.delall(frame_id)
        tags.add(getattr(id3, frame_id)(encoding=3, text=[value]))
        return
    if isinstance(tags, mp4.MP4Tags):
        if key in _MP4_TEXT:
            tags[_MP4_TEXT[key]] = [value]
        elif key in _MP4_FREEFORM:
            tags[_MP4_FREEFORM[key]] = [mp4.MP4FreeForm(value.encode("utf-8"))]
        else:
            # "3/12" or "3"; without a total of its own, the one already there stays.
            number, _, total = (part.strip() for part in value.partition("/"))
            old = tags.get(_MP4_PAIRS[key]) or [(0, 0)]
            kept = int(old[0][1]) if len(old[0]) > 1 else 0
            tags[_MP4_PAIRS[key]] = [
                (
                    int(number) if number.isdigit() else 0,
                    int(total) if total.isdigit() else kept,
                )
            ]
        return
    tags[key] = [value]


def set_front_cover(audio: Any, image: bytes, mime: str) -> None:
    """Embed `image` (`mime`: image/jpeg or image/png) as the front cover of mutagen's `audio`
    (a file object with tags), replacing any front cover it had; saving is the caller's."""
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    if isinstance(tags, id3.ID3):
        for frame in tags.getall("APIC"):
            if frame.type == FRONT_COVER:
                del tags[frame.HashKey]
        tags.add(id3.APIC(encoding=3, mime=mime, type=FRONT_COVER, desc="Cover", data=image))
        return
    if isinstance(tags, mp4.MP4Tags):
        kind = mp4.MP4Cover.FORMAT_PNG if mime == "image/png" else mp4.MP4Cover.FORMAT_JPEG
        tags["covr"] = [mp4.MP4Cover(image, imageformat=kind)]
        return
    picture = flac.Picture()
    picture.type = FRONT_COVER
    picture.mime = mime
    picture.desc = "Cover"
    picture.data = image
    if isinstance(audio, flac.FLAC):
        kept = [p for p in audio.pictures if p.type != FRONT_COVER]
        audio.clear_pictures()
        for other in [*kept, picture]:
            audio.add_picture(other)
        return
    # Ogg Vorbis and Opus: the FLAC picture block, base64-encoded, in a Vorbis comment.
    others = [v for v in tags.get(_VORBIS_PICTURE) or [] if _vorbis_picture_type(v) != FRONT_COVER]
    tags[_VORBIS_PICTURE] = [*others, base64.b64encode(picture.write()).decode("ascii")]


def _vorbis_picture(value: str) -> Any:
    """The FLAC picture block a METADATA_BLOCK_PICTURE comment holds, or None when damaged."""
    try:
        return flac.Picture(base64.b64decode(value))
    except (binascii.Error, ValueError, flac.error):
        return None


def _vorbis_picture_type(value: str) -> int | None:
    picture = _vorbis_picture(value)
    return None if picture is None else int(picture.type)


def front_cover(audio: Any) -> bytes | None:
    """The front cover image mutagen's `audio` carries, or None."""
    tags = audio.tags
    if isinstance(audio, flac.FLAC):
        for picture in audio.pictures:
            if picture.type == FRONT_COVER:
                return bytes(picture.data)
        return None
    if tags is None:
        return None
    if isinstance(tags, id3.ID3):
        for frame in tags.getall("APIC"):
            if frame.type == FRONT_COVER:
                return bytes(frame.data)
        return None
    if isinstance(tags, mp4.MP4Tags):
        covers = tags.get("covr") or []
        return bytes(covers[0]) if covers else None
    for value in tags.get(_VORBIS_PICTURE) or []:
        picture = _vorbis_picture(value)  # a damaged block counts as none
        if picture is not None and picture.type == FRONT_COVER:
            return bytes(picture.data)
    return None
