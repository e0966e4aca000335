"""Low-level file formats: sniff a file by its first bytes, load FITS and .npy arrays safely.

Nothing here ever unpickles: a pickle is refused by its magic bytes before any parser sees
the file, and ``.npy`` files are loaded with ``allow_pickle=False``. Every problem becomes
a one-line :class:`InputError` naming the file.
"""

from __future__ import annotations

import gzip
import logging
import math
import tokenize
import warnings
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np

from protomatch.errors import InputError

log = logging.getLogger(__name__)

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_HDF5_OFFSETS = (0, 512, 1024, 2048)
_FITS_SIGNATURE = b"SIMPLE  ="
_NPY_SIGNATURE = b"\x93NUMPY"
_GZIP_SIGNATURE = b"\x1f\x8b"
_PICKLE_OPCODE = 0x80
_PICKLE_MESSAGE = "looks like a Python pickle; protomatch never unpickles files"
READ_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, zlib.error)
HDF5_ERRORS = (*READ_ERRORS, RuntimeError)

#: Largest image side [pixels] read by default; ``--max-image-side`` changes it.
DEFAULT_MAX_IMAGE_SIDE = 8192
#: Numeric kinds an image may have (float, signed and unsigned integers).
_IMAGE_KINDS = "fiu"

FileFormat = Literal["hdf5", "fits", "npy"]


def sniff_format(path: str | Path) -> FileFormat:
    """Identify a file by its first bytes, never by its name.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    str
        ``"hdf5"``, ``"fits"`` (maybe gzipped) or ``"npy"``.

    Raises
    ------
    InputError
        For a missing, empty, text, pickle or unrecognised file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if not path.is_file():
        raise InputError(path, "is not a file")
    with path.open("rb") as stream:
        head = stream.read(max(_HDF5_OFFSETS) + len(_HDF5_SIGNATURE))
    if len(head) >= 2 and head[0] == _PICKLE_OPCODE and 1 <= head[1] <= 5:
        raise InputError(path, _PICKLE_MESSAGE)
    if not head:
        raise InputError(path, "is empty (0 bytes)")
    if any(head[o : o + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE for o in _HDF5_OFFSETS):
        return "hdf5"
    if head.startswith(_FITS_SIGNATURE):
        return "fits"
    if head.startswith(_NPY_SIGNATURE):
        return "npy"
    if head.startswith(_GZIP_SIGNATURE):
        return _sniff_gzip(path)
    if _looks_like_text(head):
        raise InputError(path, "is a text file, not a FITS, HDF5 or .npy image")
    raise InputError(path, "is not a FITS, HDF5 or .npy file (unrecognised contents)")


def _sniff_gzip(path: Path) -> FileFormat:
    try:
        with gzip.open(path, "rb") as stream:
            inner = stream.read(len(_FITS_SIGNATURE))
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"is a corrupt gzip file ({brief(exc)})") from None
    if inner == _FITS_SIGNATURE:
        return "fits"
    raise InputError(path, "is gzip-compressed but does not hold a FITS file")


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a multi-byte character cut at the end
    return True


def brief(exc: BaseException) -> str:
    """An exception's message on one short line.

    Parameters
    ----------
    exc
        Any exception.

    Returns
    -------
    str
        Its message with whitespace collapsed, at most 160 characters.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def expect_format(path: Path, wanted: FileFormat) -> None:
    """Refuse a file whose contents are not of the ``wanted`` format.

    Parameters
    ----------
    path
        The file.
    wanted
        ``"hdf5"``, ``"fits"`` or ``"npy"``.

    Raises
    ------
    InputError
        If :func:`sniff_format` finds another format (or none).
    """
    found = sniff_format(path)
    if found != wanted:
        raise InputError(path, f"is a {found.upper()} file, expected {wanted.upper()}")


def check_pixels(path: Path, image: np.ndarray, what: str) -> None:
    """Refuse an image with no finite pixel, all zero, or no positive pixel.

    Parameters
    ----------
    path
        The file it came from, for the message.
    image
        The pixels, any shape.
    what
        How the message names the image (e.g. ``"image"`` or a dataset name).

    Raises
    ------
    InputError
        Naming ``path`` and the problem.
    """
    finite = np.isfinite(image)
    if not finite.any():
        raise InputError(path, f"{what} has no finite pixels (all NaN/inf)")
    values = image[finite]
    if not values.any():
        raise InputError(path, f"{what} is all zero")
    if values.max() <= 0:
        raise InputError(path, f"{what} has no positive pixels")


def as_image(path: Path, array: np.ndarray, what: str, projection: int | None) -> np.ndarray:
    """Squeeze degenerate axes and pick one plane of a 3-D stack; validate the pixels.

    Parameters
    ----------
    path
        The file it came from, for messages.
    array
        Numeric array: (H, W), or N-D with degenerate axes, or a (P, H, W) stack.
    what
        How messages name the image.
    projection
        1-based plane of a 3-D stack (None: the array must be 2-D once squeezed).

    Returns
    -------
    numpy.ndarray
        (H, W) float32 image (NaN/inf kept).

    Raises
    ------
    InputError
        For a non-numeric or non-2-D array, a missing plane or unusable pixels.
    """
    if array.dtype.kind not in "fiu":
        raise InputError(path, f"{what} has non-numeric type {array.dtype}")
    squeezed = np.squeeze(array)
    if squeezed.ndim == 3 and projection is not None:
        if not 1 <= projection <= squeezed.shape[0]:
            raise InputError(
                path, f"has no projection {projection} (it holds {squeezed.shape[0]} planes)"
            )
        squeezed = squeezed[projection - 1]
    if squeezed.ndim != 2:
        raise InputError(
            path,
            f"{what} has shape {array.shape}; expected a 2-D image "
            f"(found {squeezed.ndim} non-degenerate axes)",
        )
    with np.errstate(over="ignore"):
        image = np.asarray(squeezed, dtype=np.float32)
    check_pixels(path, image, what)
    return image


def blank_infinite(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Infinite pixels made blank (NaN), and how many there were.

    Parameters
    ----------
    image
        Float pixels, any shape.

    Returns
    -------
    image : numpy.ndarray
        ``image`` itself when it has no infinite pixel, else a copy with them set to NaN.
    count : int
        The number of infinite (inf or -inf) pixels.
    """
    infinite = np.isinf(image)
    count = int(infinite.sum())
    if not count:
        return image, 0
    return np.where(infinite, np.float32(np.nan), image).astype(image.dtype, copy=False), count


def require_square(path: Path, image: np.ndarray, what: str) -> None:
    """Refuse a non-square (H, W) image.

    Parameters
    ----------
    path
        The file it came from, for the message.
    image
        (H, W) image.
    what
        How the message names the image.

    Raises
    ------
    InputError
        If H != W.
    """
    if image.shape[0] != image.shape[1]:
        raise InputError(path, f"{what} is not square ({image.shape[0]}x{image.shape[1]} px)")


def check_declared_shape(
    path: Path, shape: tuple[int, ...], max_side: int, what: str = "image"
) -> None:
    """Refuse an array whose declared shape is larger than an image of ``max_side`` pixels.

    Called with the shape a file's header declares, before any pixel is read, so a small
    file claiming a huge image never allocates it.

    Parameters
    ----------
    path
        The file, for the message.
    shape
        The declared shape, any number of axes.
    max_side
        Largest accepted image side [pixels]: every axis and the total number of pixels
        (at most ``max_side`` squared) are checked.
    what
        How the message names the array.

    Raises
    ------
    InputError
        Naming the file, the declared shape, the limit and the option that raises it.
    """
    sides = [int(n) for n in shape]
    if any(n < 0 for n in sides):
        raise InputError(path, f"{what} declares a negative size {tuple(sides)}")
    total = math.prod(sides)
    if max(sides, default=0) > max_side or total > max_side * max_side:
        declared = "x".join(map(str, sides))
        raise InputError(
            path,
            f"{what} declares {declared} pixels, more than the maximum image side of "
            f"{max_side} px allows; raise it with --max-image-side if the file is genuine",
        )


def _check_complete(path: Path, needed: int, what: str) -> None:
    """Refuse a file shorter than the ``needed`` bytes its header declares."""
    size = path.stat().st_size
    if size < needed:
        raise InputError(
            path,
            f"is truncated: its header declares {needed} bytes up to the end of the {what}, "
            f"the file has {size}",
        )


def read_npy(path: Path, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> np.ndarray:
    """Load a ``.npy`` array without ever unpickling, checking its header first.

    Parameters
    ----------
    path
        The ``.npy`` file.
    max_side
        Largest accepted image side [pixels] (:func:`check_declared_shape`), checked on
        the header's shape before the data is read.

    Returns
    -------
    numpy.ndarray
        Its array, any shape and numeric dtype.

    Raises
    ------
    InputError
        For an object or non-numeric array, a shape over the limit, or a truncated or
        invalid file.
    """
    try:
        with path.open("rb") as stream:
            shape, dtype, offset = _npy_header(path, stream)
        if dtype.hasobject:
            raise InputError(path, "holds a Python object array; protomatch never unpickles files")
        if dtype.kind not in _IMAGE_KINDS:
            raise InputError(path, f"holds non-numeric type {dtype}")
        check_declared_shape(path, shape, max_side)
        _check_complete(path, offset + math.prod(shape) * dtype.itemsize, "data")
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(path, f"is not a valid .npy file ({brief(exc)})") from None
    except (OSError, EOFError) as exc:
        raise InputError(path, f"is not a valid .npy file, truncated? ({brief(exc)})") from None


def _npy_header(path: Path, stream: Any) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, data offset [bytes]) from a ``.npy`` header; nothing else is read."""
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise InputError(path, f"is a .npy file of unknown version {version}")
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    try:
        shape, _, dtype = read_header(stream)
    except (SyntaxError, tokenize.TokenError, RecursionError, TypeError) as exc:
        raise InputError(path, f"has an unreadable .npy header ({brief(exc)})") from None
    if not isinstance(shape, tuple) or not all(isinstance(n, int) for n in shape):
        raise InputError(path, f"has an invalid .npy shape {shape!r}")
    return shape, dtype, stream.tell()


def read_fits(
    path: Path, hdu: int | None, max_side: int = DEFAULT_MAX_IMAGE_SIDE
) -> tuple[np.ndarray, Any]:
    """Read the image data and header of one FITS HDU, checking its header first.

    Parameters
    ----------
    path
        The FITS file (maybe gzipped).
    hdu
        0-based HDU index (None: the first HDU holding an image).
    max_side
        Largest accepted image side [pixels] (:func:`check_declared_shape`), checked on
        the header's ``NAXISn`` before the data is read; an uncompressed file shorter than
        its header declares is refused then too.

    Returns
    -------
    data : numpy.ndarray
        The HDU's array, any shape.
    header : astropy.io.fits.Header
        A copy of its header without the cards that cannot be parsed (a warning names
        them), so reading any keyword later cannot fail.

    Raises
    ------
    InputError
        For a missing HDU, an HDU without image data or an unreadable file.
    """
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, memmap=False) as hdus:
                chosen = hdus[hdu] if hdu is not None else _first_image_hdu(path, hdus)
                if chosen is None or not chosen.is_image or not _fits_shape(path, chosen):
                    raise InputError(path, "holds no image data")
                check_declared_shape(path, _fits_shape(path, chosen), max_side)
                _check_fits_complete(path, chosen)
                data = chosen.data
                if data is None:
                    raise InputError(path, "holds no image data")
                return np.array(data), _readable_header(path, chosen.header)
    except IndexError:
        raise InputError(path, f"has no HDU {hdu}") from None
    except (*READ_ERRORS, fits.VerifyError) as exc:
        raise unreadable(path, "FITS", exc) from None


def _readable_header(path: Path, header: Any) -> Any:
    """A copy of ``header`` holding only the cards whose keyword and value parse."""
    from astropy.io import fits

    readable, unreadable_cards = fits.Header(), 0
    for card in header.cards:
        try:
            readable.append((card.keyword, card.value, card.comment), end=True)
        except (*READ_ERRORS, fits.VerifyError):
            unreadable_cards += 1
    if unreadable_cards:
        log.warning("%s: ignoring %d unreadable header card(s)", path, unreadable_cards)
    return readable


def _fits_shape(path: Path, hdu: Any) -> tuple[int, ...]:
    """The (..., NAXIS2, NAXIS1) shape an image HDU's header declares; () without data.

    For a tile-compressed HDU astropy's header is already the image's (``ZNAXISn`` read as
    ``NAXISn``).
    """
    header = hdu.header
    count = header.get("NAXIS", 0)
    if not _is_integer(count) or not 0 <= count <= 999:
        raise InputError(path, f"has an invalid NAXIS = {count!r}")
    sides = tuple(header.get(f"NAXIS{k}", 0) for k in range(count, 0, -1))
    if not all(_is_integer(n) for n in sides):
        raise InputError(path, "has a non-integer NAXISn value")
    return sides if sides and all(sides) else ()


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_fits_complete(path: Path, hdu: Any) -> None:
    """Refuse an uncompressed FITS file shorter than the data its header declares."""
    from astropy.io import fits

    with path.open("rb") as stream:
        gzipped = stream.read(len(_GZIP_SIGNATURE)) == _GZIP_SIGNATURE
    if gzipped or isinstance(hdu, fits.CompImageHDU):
        return
    bitpix = hdu.header.get("BITPIX")
    if not _is_integer(bitpix) or bitpix not in (8, 16, 32, 64, -32, -64):
        raise InputError(path, f"has an invalid BITPIX = {bitpix!r}")
    needed = hdu.fileinfo()["datLoc"] + math.prod(_fits_shape(path, hdu)) * abs(bitpix) // 8
    _check_complete(path, needed, "image data")


def _first_image_hdu(path: Path, hdus: Any) -> Any:
    for candidate in hdus:
        if candidate.is_image and _fits_shape(path, candidate):
            return candidate
    return None


def unreadable(path: Path, kind: str, exc: BaseException) -> InputError:
    """The error for a file its parser rejects (truncated or corrupt).

    Parameters
    ----------
    path
        The file.
    kind
        The format it was read as (e.g. ``"HDF5"``).
    exc
        The parser's exception.

    Returns
    -------
    InputError
        To be raised by the caller.
    """
    return InputError(path, f"cannot be read as {kind}, truncated or corrupt? ({brief(exc)})")
