"""Incoming files: size limits, zip archives, and content-addressed storage of the raw bytes."""

from __future__ import annotations

import hashlib
import logging
import lzma
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import File
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..models import JobStatus, Project, RawUpload

logger = logging.getLogger(__name__)
# Raw uploads purged per beat run; the next run takes the rest.
MAX_PURGED_PER_RUN = 500


@dataclass
class IncomingFile:
    """A file handed to us by a browser, the CLI or the API: a name, a size and a way to read it."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]
    # The SHA-256 of the bytes when already known: a zip member is read through once (hashed, its CRC checked)
    # before it is handed on, so storing it need not read it a third time.
    sha256: str | None = None


def incoming_from_upload(uploaded: Any, name: str = "") -> IncomingFile:
    """An IncomingFile over a Django UploadedFile, called ``name`` (default: the file's own). It is one handle that
    services read more than once (hash, then store), so each open() rewinds it, and closing leaves it open for the
    next reader."""

    @contextmanager
    def rewound() -> Iterator[IO[bytes]]:
        uploaded.seek(0)
        yield uploaded
        uploaded.seek(0)

    return IncomingFile(name=name or uploaded.name or "upload", size=uploaded.size, open=rewound)


def _human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"


def _size_error(size: int) -> str | None:
    limit = settings.CULPRIT_MAX_UPLOAD_BYTES
    if size > limit:
        return f"the file is {_human_size(size)}, over the {_human_size(limit)} limit"
    return None


def _sha256(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def raw_upload_store(*, project: Project, incoming: IncomingFile, user: AbstractBaseUser | None) -> RawUpload:
    """Store the bytes once per project; the same bytes again return the existing row."""
    sha = incoming.sha256
    if sha is None:
        with incoming.open() as fh:
            sha = _sha256(fh)
    existing = RawUpload.objects.filter(project=project, sha256=sha).first()
    if existing:
        return existing
    upload = RawUpload(
        project=project, sha256=sha, filename=incoming.name[:500], size=incoming.size, uploaded_by=user
    )
    _file_save(upload, incoming)
    try:
        with transaction.atomic():
            upload.save()
    except IntegrityError:  # the same bytes arrived concurrently; theirs won
        return RawUpload.objects.get(project=project, sha256=sha)
    return upload


def _file_save(upload: RawUpload, incoming: IncomingFile) -> None:
    """Write the bytes to storage. A read that fails half-way (storage full, a member that will not inflate)
    takes the partly written file away with it, so no truncated file is left behind without a row."""
    storage, target = upload.file.storage, upload.file.field.generate_filename(upload, upload.sha256)
    was_there = storage.exists(target)
    try:
        with incoming.open() as fh:
            upload.file.save(upload.sha256, File(fh), save=False)
    except BaseException:
        # Only a file this call created: one that was there before belongs to someone else (storage then saves
        # under another name, which this call never learns), and a file some row points at is never removed.
        if not was_there and storage.exists(target) and not RawUpload.objects.filter(file=target).exists():
            storage.delete(target)
        raise


# A local file header, and the end of an archive that holds no files (all an empty zip consists of).
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _is_zip(incoming: IncomingFile) -> bool:
    with incoming.open() as fh:
        return fh.read(4) in _ZIP_MAGIC


def _zip_members(incoming: IncomingFile) -> Iterator[IncomingFile | tuple[str, str]]:
    """Members of an uploaded zip as IncomingFiles, or (name, error) for members that cannot be taken."""
    try:
        with incoming.open() as fh:
            archive = zipfile.ZipFile(fh)
            infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # ValueError: a name that is not UTF-8
        yield incoming.name, f"not a valid zip archive ({exc})"
        return
    infos = [i for i in infos if not _is_junk_member(i.filename)]
    if not infos:
        yield incoming.name, "the archive holds no files"
        return
    if error := _archive_error(infos):
        yield incoming.name, error
        return
    for info in infos:
        name = f"{incoming.name}/{info.filename}"
        # Checked on the central directory, before anything is unpacked: a zip bomb never inflates. Reading a
        # member later stops at its declared size (zipfile enforces it and checks the CRC at the end).
        if error := _size_error(info.file_size) or _ratio_error(info):
            yield name, error
            continue
        if error := _member_error(info):
            yield name, error
            continue
        if info.filename.lower().endswith(".zip"):
            yield name, _NESTED_ZIP
            continue
        member = IncomingFile(name=name, size=info.file_size, open=_member_opener(incoming, info))
        # Read through once before anything is stored: a member that will not inflate, or fails its CRC, fails
        # alone here with a message, instead of half-way through storing it.
        try:
            nested, member.sha256 = _member_digest(member)
        except _MEMBER_READ_ERRORS as exc:
            yield name, _member_read_error(exc, info)
            continue
        if nested:
            yield name, _NESTED_ZIP
            continue
        yield member


# Archives are opened one level deep: nesting would multiply every limit above by itself.
_NESTED_ZIP = "a zip inside a zip is not unpacked: upload the inner archive on its own, or unzip it first"

# What reading a member can raise: RuntimeError (encrypted, or a compression module missing), NotImplementedError
# (compression method), zipfile.BadZipFile (bad CRC, a header that disagrees with the directory), zlib/lzma errors
# and EOFError (corrupt or cut compressed data), OSError (bzip2's invalid data, or the upload itself unreadable).
_MEMBER_READ_ERRORS = (
    RuntimeError,
    NotImplementedError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
)

_ENCRYPTED = "encrypted zip member: Culprit cannot read password-protected archives"
_METHOD_NAMES = {
    1: "Shrink",
    6: "Implode",
    9: "Deflate64",
    10: "PKWARE Implode",
    12: "BZIP2",
    14: "LZMA",
    93: "Zstandard",
    95: "XZ",
    98: "PPMd",
}
_SUPPORTED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _unsupported_method(method: int) -> str:
    label = _METHOD_NAMES.get(method, f"method {method}")
    return f"zip member compressed with an unsupported method ({label}); re-zip it with the standard Deflate"


def _member_error(info: zipfile.ZipInfo) -> str | None:
    """Why a member cannot be read, judged from the central directory before it is opened."""
    if info.flag_bits & 0x41:  # bit 0: encrypted; bit 6: strong encryption
        return _ENCRYPTED
    if info.compress_type not in _SUPPORTED_METHODS:
        return _unsupported_method(info.compress_type)
    return None


def _member_read_error(exc: BaseException, info: zipfile.ZipInfo) -> str:
    """The reason a member failed while it was read, for the person who uploaded it."""
    text = str(exc)
    if "encrypt" in text:
        return _ENCRYPTED
    if isinstance(exc, NotImplementedError) or (isinstance(exc, RuntimeError) and "requires" in text):
        return _unsupported_method(info.compress_type)  # a method zipfile knows but this Python cannot unpack
    if "CRC" in text:
        return "zip member is corrupt (bad CRC)"
    if isinstance(exc, zipfile.BadZipFile):
        return f"zip member is corrupt ({text})"
    if isinstance(exc, (zlib.error, lzma.LZMAError, EOFError)):
        return "zip member is corrupt (its compressed data cannot be unpacked)"
    logger.warning("zip member %s could not be read", info.filename, exc_info=exc)
    return f"zip member could not be read ({type(exc).__name__}: {text})"


def _member_digest(member: IncomingFile) -> tuple[bool, str | None]:
    """Read a member through: (True, None) when it is itself a zip (read no further), else (False, its SHA-256).
    Reading to the end is what makes zipfile check the CRC."""
    digest = hashlib.sha256()
    with member.open() as fh:
        head = fh.read(1024 * 1024)
        if head[:4] in _ZIP_MAGIC:
            return True, None
        digest.update(head)
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    return False, digest.hexdigest()


def _archive_error(infos: list[zipfile.ZipInfo]) -> str | None:
    if len(infos) > settings.CULPRIT_MAX_ZIP_MEMBERS:
        return f"the archive holds {len(infos)} files, over the {settings.CULPRIT_MAX_ZIP_MEMBERS} limit"
    total = sum(i.file_size for i in infos)
    if total > settings.CULPRIT_MAX_ZIP_TOTAL_BYTES:
        return (
            f"the archive unpacks to {_human_size(total)}, over the "
            f"{_human_size(settings.CULPRIT_MAX_ZIP_TOTAL_BYTES)} limit"
        )
    # Many small members, each too small for its own ratio to mean much, can still be a bomb together. (One member
    # is judged by its own ratio, with a message naming it.)
    ratio = total / max(sum(i.compress_size for i in infos), 1)
    if len(infos) > 1 and total > _RATIO_FLOOR and ratio > settings.CULPRIT_MAX_ZIP_RATIO:
        return f"the archive is compressed {ratio:.0f}:1, over the {settings.CULPRIT_MAX_ZIP_RATIO}:1 limit (a zip bomb?)"
    return None


# Below this size a member's ratio says nothing (a few KB of anything fits in a few dozen bytes) and costs nothing.
_RATIO_FLOOR = 64 * 1024


def _ratio_error(info: zipfile.ZipInfo) -> str | None:
    ratio = info.file_size / max(info.compress_size, 1)
    # Real trace JSON compresses 5-20x; the limit only trips on deliberately repetitive bombs.
    if info.file_size > _RATIO_FLOOR and ratio > settings.CULPRIT_MAX_ZIP_RATIO:
        return f"compressed {ratio:.0f}:1, over the {settings.CULPRIT_MAX_ZIP_RATIO}:1 limit (a zip bomb?)"
    return None


def _member_opener(incoming: IncomingFile, member: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    """Opens the member as a stream (never unpacked to memory or disk as a whole), closing the archive after."""

    @contextmanager
    def opener() -> Iterator[IO[bytes]]:
        with incoming.open() as fh, zipfile.ZipFile(fh) as archive, archive.open(member) as stream:
            yield stream

    return opener


def _is_junk_member(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith(".")


def expand_incoming(incoming: IncomingFile) -> Iterator[IncomingFile | tuple[str, str]]:
    """One entry per importable file: zips are opened, oversize files become (name, error)."""
    if error := _size_error(incoming.size):
        yield incoming.name, error
    elif incoming.size == 0:
        yield incoming.name, "the file is empty"
    else:
        try:  # also the first read of a file: one that cannot be read fails alone, by name
            is_zip = _is_zip(incoming)
        except OSError as exc:
            yield incoming.name, cannot_read(exc)
            return
        if is_zip:
            yield from _zip_members(incoming)
        else:
            yield incoming


def cannot_read(exc: OSError) -> str:
    """Why a file could not be read, as a file's failure says it ("cannot read it: permission denied")."""
    return f"cannot read it: {(exc.strerror or str(exc)).lower()}"


def failed_uploads_purge(*, older_than: int) -> int:
    """Delete the stored bytes of uploads that produced nothing: every job on them failed, no trace came of them,
    and they are older than ``older_than`` seconds (kept that long so a failure can be looked into). Returns how
    many were deleted. Re-uploading the same bytes reuses the row, so a row with any job still queued, running or
    done is left alone; the check and the delete are one statement."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    live = [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.DUPLICATE]
    doomed = (
        RawUpload.objects.filter(created_at__lt=cutoff, traces__isnull=True)
        .exclude(jobs__status__in=live)
        .order_by("pk")
    )
    purged = 0
    for upload in doomed[:MAX_PURGED_PER_RUN]:
        name = upload.file.name
        with transaction.atomic():
            deleted, _ = (
                RawUpload.objects.filter(pk=upload.pk, traces__isnull=True)
                .exclude(jobs__status__in=live)
                .delete()
            )
        if deleted and name:
            upload.file.storage.delete(name)  # after the commit: a row never points at a missing file
            purged += 1
    if purged:
        logger.info("purged the raw bytes of %d failed upload(s)", purged)
    return purged
