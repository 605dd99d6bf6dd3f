"""The first, cheap line against zip bombs in the zip-based formats (DOCX, PPTX, XLSX, EPUB): a
package's declared sizes are read from its central directory before any reader inflates it."""

from __future__ import annotations

import zipfile
from io import BytesIO

from citadel.documents.parsed import ParseError

MAX_UNZIPPED_BYTES = 512 * 1024 * 1024
MAX_RATIO = 100  # deflate tops out near 1030x; real XML parts stay well under 100x
RATIO_FLOOR_BYTES = 1024 * 1024  # small parts may compress far better than that, harmlessly
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
MB = 1024 * 1024


def open_checked_zip(data: bytes, what: str) -> zipfile.ZipFile:
    """``data`` opened as a zip, refused as a ParseError when it is none or would expand beyond the
    limits; ``what`` names the format in the message ("an Office Open XML file", "an EPUB")."""
    if data.startswith(OLE_MAGIC):
        raise ParseError(
            f"encrypted or not {what}: an OLE compound file (a password-protected document or an old binary format);"
            " remove the password or save it in the newer format, and index it again"
        )
    try:
        archive = zipfile.ZipFile(BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ParseError(f"encrypted or not {what}: not a readable zip ({one_line(exc)})") from exc
    try:
        check_sizes(members)
    except ParseError:
        archive.close()
        raise
    return archive


def check_sizes(members: list[zipfile.ZipInfo]) -> None:
    """Refuse a package whose members declare more than MAX_UNZIPPED_BYTES in all, or one large
    member that inflates more than MAX_RATIO times."""
    total = sum(member.file_size for member in members)
    if total > MAX_UNZIPPED_BYTES:
        raise ParseError(f"expands to {total // MB} MB, over the limit of {MAX_UNZIPPED_BYTES // MB} MB (a zip bomb?)")
    for member in members:
        if member.file_size > RATIO_FLOOR_BYTES and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            ratio = member.file_size // max(member.compress_size, 1)
            raise ParseError(
                f"{member.filename!r} expands {ratio}x to {member.file_size // MB} MB, over the limit of {MAX_RATIO}x (a zip bomb?)"
            )


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line for a dead letter's reason."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
