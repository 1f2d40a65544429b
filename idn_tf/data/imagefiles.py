"""The check of a file source's images before training (Clothing1M, class folders).

`scan` checks each listed image once, in a thread pool, and either stops at the first bad
one (a one-line `DataError` naming where it is listed) or collects every bad one for
`skip_bad_images`. How deep the check looks is one of `CHECKS` (see `scan`).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import stat
import sys
import time

import numpy as np
from PIL import Image, UnidentifiedImageError

from idn_tf.data.dataset import DataError

CHECKS = ("header", "decode", "exists")
# The image formats (PIL names) a class folder accepts: those
# keras.utils.image_dataset_from_directory reads (tf.io.decode_image: GIF as its first
# frame). Clothing1M's are `JPEG_PNG`.
FORMATS = ("JPEG", "PNG", "BMP", "GIF")
JPEG_PNG = ("JPEG", "PNG")
_CHUNK = 4096  # images checked per batch of thread-pool work (bounds the pending futures)
_PROGRESS_EVERY = 20_000  # images between progress lines (~50 lines for Clothing1M)


def key_scores(keys, seed: int) -> np.ndarray:
    """uint64 [len(keys)]: blake2b(f"{seed}:{key}") of each key, a pseudo-random score that
    depends only on the seed and the key (not on the numpy version or the key order)."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(),
                                                    digest_size=8).digest(), "big")
                     for key in keys], dtype=np.uint64)


def scan(listings, check, num_threads=None, skip_bad_images=False, verbose=True,
         source="images", formats=FORMATS) -> dict[str, str]:
    """Checks each distinct image of `listings` [(path, where, line)] -> {path: reason}.

    `where` names where the image is listed (a list file, or a folder with line None).
    `check` is one of `CHECKS`: "header" (default): PIL parses the header (the format must
    be one of `formats`), PNG chunk CRCs are verified, and a JPEG must end with its
    end-of-image marker; when it does not (truncated, or trailing bytes after the marker)
    the image is decoded to decide; BMP and GIF images are decoded. Reads a few KB per
    JPEG; misses damage inside the compressed data. "decode": decodes every image (JPEGs
    at 1/8 scale, which libjpeg does cheaply); reads every byte. "exists": only that each
    path is a non-empty file. `num_threads` None = min(32, 4 * CPUs): the check waits on
    the disk (PIL decodes outside the GIL), so more threads than CPUs help. Progress lines
    on stderr start with `source`.

    Without `skip_bad_images`, the first bad image in listing order raises a DataError
    (after at most one _CHUNK of further checks), naming the list file and line.
    """
    first = {}  # path -> (list file, line) of its first listing, in listing order
    for path, list_path, line in listings:
        first.setdefault(path, (list_path, line))
    paths = list(first)
    bad = {}
    progress = _Progress(len(paths), verbose, source)
    if num_threads is None:
        num_threads = min(32, 4 * (os.cpu_count() or 1))
    checker = (_check_exists if check == "exists" else
               functools.partial(_check_image, decode=check == "decode", formats=formats))
    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start:start + _CHUNK]
            for path, reason in zip(chunk, pool.map(checker, chunk)):
                if reason is None:
                    continue
                if not skip_bad_images:
                    list_path, line = first[path]
                    where = list_path if line is None else f"{list_path}, line {line}"
                    raise DataError(f"{where}: {reason}: {path} (pass skip_bad_images to "
                                    "leave bad images out)")
                bad[path] = reason
            progress.update(start + len(chunk), len(bad))
    return bad


def _check_exists(path: str) -> str | None:
    """None if `path` is a non-empty file, else the reason."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return "image file not found"
    except OSError as error:
        return f"cannot read image file ({error.strerror})"
    if not stat.S_ISREG(status.st_mode):
        return "not a regular file"
    return "empty image file" if status.st_size == 0 else None


def _check_image(path: str, decode: bool, formats) -> str | None:
    """None if `path` is a readable image of `formats`, else the reason (see `scan`)."""
    reason = _check_exists(path)
    if reason is not None:
        return reason
    try:
        with open(path, "rb") as file:
            with Image.open(file, formats=formats) as image:
                image_format = image.format
                if decode or image.format not in JPEG_PNG:
                    # BMP and GIF have no cheap integrity check: decoded (they are rare).
                    _decode_small(image)
                else:
                    image.verify()  # PNG: chunk CRCs up to IEND; JPEG: nothing
            if image_format == "JPEG" and not decode and not _ends_with_eoi(file):
                # Truncated, or harmless bytes after the marker: decoding tells them apart.
                file.seek(0)
                with Image.open(file, formats=formats) as image:
                    _decode_small(image)
    except UnidentifiedImageError:
        return f"not a {' or '.join(formats)} image"
    # A damaged file fails in many ways inside PIL (OSError, SyntaxError, ValueError,
    # struct.error, DecompressionBombError, ...): any failure means the image is unusable.
    except Exception as error:  # pylint: disable=broad-except
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"damaged image file (PIL: {message})"
    return None


def _decode_small(image) -> None:
    """Decodes all of `image`'s data; JPEGs at 1/8 scale (DCT scaling skips most work)."""
    if image.format == "JPEG":
        image.draft(None, (1, 1))  # the smallest scale libjpeg offers (1/8)
    image.load()


def _ends_with_eoi(file) -> bool:
    """Whether a JPEG file ends with its end-of-image marker (FF D9), padding aside."""
    file.seek(0, os.SEEK_END)
    file.seek(max(0, file.tell() - 1024))
    return file.read().rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")



class _Progress:
    """Textual progress of the image check on stderr (no terminal control: log-friendly)."""

    def __init__(self, total: int, verbose: bool, source: str):
        self._total, self._verbose, self._source = total, verbose, source
        self._start, self._printed = time.monotonic(), 0

    def update(self, done: int, bad: int) -> None:
        if not self._verbose or (done - self._printed < _PROGRESS_EVERY and done < self._total):
            return
        self._printed = done
        seconds = max(time.monotonic() - self._start, 1e-9)
        rate = done / seconds
        left = (self._total - done) / rate if rate else 0.0
        print(f"{self._source}: checked {done:,}/{self._total:,} images "
              f"({100 * done / max(self._total, 1):.0f}%), {bad:,} bad, {rate:,.0f}/s, "
              f"{seconds:.0f} s elapsed, ~{left:.0f} s left", file=sys.stderr, flush=True)
