"""An audio file's tags under one spelling, whatever its container stores.

Tag names are normalised to lower-case keys (title, artist, album, albumartist, tracknumber,
discnumber, date, isrc, musicbrainz_trackid, genre): ID3 frames (MP3, WAV, AIFF), Vorbis
comments (FLAC, Ogg Vorbis, Opus) or MP4 atoms. Reading and writing go through the same table,
so what the metadata module writes is what every reader (downloads, the library, folders)
reads back. Works on mutagen's plain (not "easy") tag objects.
"""

from __future__ import annotations

from typing import Any

from mutagen import id3 as _id3
from mutagen import mp4 as _mp4

__all__ = ["TAG_KEYS", "read_tags", "set_tag"]

# mutagen ships py.typed but leaves the tag classes' methods unannotated, which strict mypy
# rejects at every call; the tag modules are used through Any instead.
id3: Any = _id3
mp4: Any = _mp4

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
