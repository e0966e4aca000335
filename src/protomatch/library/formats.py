"""Low-level file formats: sniff a file by its first bytes, load FITS and .npy arrays safely.

Nothing here ever unpickles: a pickle is refused by its magic bytes before any parser sees
the file, and ``.npy`` files are loaded with ``allow_pickle=False``. Every problem becomes
a one-line :class:`InputError` naming the file.
"""

from __future__ import annotations

import gzip
import logging
import math
import warnings
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
_HEADER_KEYS = (
    "OBJECT", "TELESCOP", "INSTRUME", "DATE-OBS", "BUNIT", "BTYPE", "BMAJ", "BMIN", "BPA",
    "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CDELT1", "CDELT2", "CRPIX1", "CRPIX2",
    "CRVAL1", "CRVAL2", "RADESYS", "EQUINOX", "RESTFRQ", "DISTANCE",
)  # fmt: skip
READ_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, EOFError)
HDF5_ERRORS = (*READ_ERRORS, RuntimeError)

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
    except (OSError, EOFError) as exc:
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


def read_npy(path: Path) -> np.ndarray:
    """Load a ``.npy`` array without ever unpickling.

    Parameters
    ----------
    path
        The ``.npy`` file.

    Returns
    -------
    numpy.ndarray
        Its array, any shape and numeric dtype.

    Raises
    ------
    InputError
        For an object array or a truncated or invalid file.
    """
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise InputError(
                path, "holds a Python object array; protomatch never unpickles files"
            ) from None
        raise InputError(path, f"is not a valid .npy file ({brief(exc)})") from None
    except (OSError, EOFError) as exc:
        raise InputError(path, f"is not a valid .npy file, truncated? ({brief(exc)})") from None


def read_fits(path: Path, hdu: int | None) -> tuple[np.ndarray, Any]:
    """Read the image data and header of one FITS HDU.

    Parameters
    ----------
    path
        The FITS file (maybe gzipped).
    hdu
        0-based HDU index (None: the first HDU holding an image).

    Returns
    -------
    data : numpy.ndarray
        The HDU's array, any shape.
    header : astropy.io.fits.Header
        A copy of its header.

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
                chosen = hdus[hdu] if hdu is not None else _first_image_hdu(hdus)
                if chosen is None or chosen.data is None or not chosen.is_image:
                    raise InputError(path, "holds no image data")
                return np.array(chosen.data), chosen.header.copy()
    except IndexError:
        raise InputError(path, f"has no HDU {hdu}") from None
    except (*READ_ERRORS, fits.VerifyError) as exc:
        raise unreadable(path, "FITS", exc) from None


def _first_image_hdu(hdus: Any) -> Any:
    for candidate in hdus:
        if candidate.is_image and candidate.data is not None and candidate.data.size:
            return candidate
    return None


def select_header(header: Any) -> dict[str, Any]:
    """The FITS keywords protomatch reports, where present and JSON-serialisable.

    Parameters
    ----------
    header
        An ``astropy.io.fits.Header`` (or any mapping with ``get``).

    Returns
    -------
    dict
        Keyword → value for the known keywords (object, telescope, beam, WCS, units ...).
    """
    selected: dict[str, Any] = {}
    for key in _HEADER_KEYS:
        value = header.get(key)
        if isinstance(value, (bool, int, str)) or (isinstance(value, float) and np.isfinite(value)):
            selected[key] = value
    return selected


def _celestial_wcs(path: Path, header: Any) -> Any:
    """The header's 2-D celestial WCS, or None (absent, or unreadable: then a warning)."""
    from astropy.utils.exceptions import AstropyWarning
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            celestial = WCS(header).celestial
            if celestial.naxis != 2 or not celestial.has_celestial:
                return None
            celestial.pixel_scale_matrix  # noqa: B018 - fails here on a broken WCS
            return celestial
    except Exception as exc:  # metadata is optional: a broken WCS must not stop a match
        log.warning("%s: ignoring unreadable WCS (%s)", path, exc)
        return None


def celestial_header(path: Path, header: Any) -> Any:
    """The header's 2-D celestial WCS as FITS keywords (``astropy.io.fits.Header``), or None.

    Parameters
    ----------
    path
        The file, for warnings.
    header
        Its FITS header.

    Returns
    -------
    astropy.io.fits.Header or None
        Keywords of the celestial WCS alone (for drawing the image on the sky).
    """
    celestial = _celestial_wcs(path, header)
    return None if celestial is None else celestial.to_header()


def pixel_scale_arcsec(path: Path, header: Any) -> float | None:
    """Pixel side from the header's celestial WCS, arcsec.

    Parameters
    ----------
    path
        The file, for warnings.
    header
        Its FITS header.

    Returns
    -------
    float or None
        Pixel side [arcsec] (the geometric mean of the two axes for non-square pixels);
        None without a usable celestial WCS.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    celestial = _celestial_wcs(path, header)
    if celestial is None:
        return None
    scales = np.abs(proj_plane_pixel_scales(celestial)) * 3600.0
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        return None
    if not np.isclose(scales[0], scales[1], rtol=1e-3):
        log.warning("%s: non-square pixels %s arcsec; using their geometric mean", path, scales)
    return float(np.sqrt(scales[0] * scales[1]))


def sky_per_pixel(path: Path, header: Any) -> tuple[tuple[float, float], ...] | None:
    """The sky offset of one pixel step along each array axis, from the celestial WCS.

    The WCS's linear part (CDELT with PC, or CD), rows ordered longitude (east) then
    latitude (north): it says how the array is turned and mirrored on the sky.

    Parameters
    ----------
    path
        The file, for warnings.
    header
        Its FITS header.

    Returns
    -------
    tuple or None
        ((east per column, east per row), (north per column, north per row)) [arcsec];
        None without a usable, non-singular celestial WCS.
    """
    celestial = _celestial_wcs(path, header)
    if celestial is None:
        return None
    matrix = np.asarray(celestial.pixel_scale_matrix, dtype=np.float64) * 3600.0
    matrix = matrix[[celestial.wcs.lng, celestial.wcs.lat]]
    if not np.all(np.isfinite(matrix)) or np.linalg.det(matrix) == 0:
        return None
    return tuple((float(row[0]), float(row[1])) for row in matrix)


_CELESTIAL_PREFIXES = ("RA", "DEC", "GLON", "GLAT", "ELON", "ELAT")


def wcs_scale_problem(header: Any) -> str | None:
    """What makes a celestial WCS's pixel scale unusable, or None.

    Without ``CDELTi`` or a ``CD`` matrix a FITS reader assumes 1 degree per pixel; a scale of
    0 is degenerate. Both are refused rather than read as a scale.

    Parameters
    ----------
    header
        A FITS header.

    Returns
    -------
    str or None
        The problem, naming the keyword; None when the scale keywords look usable or the
        header has no celestial axes at all (then the scale is simply unknown).
    """
    axes = [
        i
        for i in range(1, int(header.get("NAXIS", 0) or 0) + 1)
        if str(header.get(f"CTYPE{i}", "")).upper().startswith(_CELESTIAL_PREFIXES)
    ]
    if len(axes) != 2:
        return None
    cd_keys = [f"CD{i}_{j}" for i in axes for j in axes]
    if any(key in header for key in cd_keys):
        matrix = np.array([_number_or_nan(header.get(key, 0.0)) for key in cd_keys]).reshape(2, 2)
        if not np.all(np.isfinite(matrix)) or np.linalg.det(matrix) == 0:
            return f"its WCS CD matrix ({', '.join(cd_keys)}) is singular or not numeric"
        return None
    for i in axes:
        if f"CDELT{i}" not in header:
            return (
                f"has a celestial WCS (CTYPE{i} = {header.get(f'CTYPE{i}')!r}) but no CDELT{i} "
                "or CD matrix, so its pixel scale is unknown"
            )
        value = _number_or_nan(header.get(f"CDELT{i}"))
        if not np.isfinite(value) or value == 0:
            return f"header CDELT{i} = {header.get(f'CDELT{i}')!r} is not a pixel scale"
    return None


def beam_problem(header: Any) -> str | None:
    """What is wrong with the ``BMAJ``/``BMIN``/``BPA`` keywords, or None.

    Parameters
    ----------
    header
        A FITS header.

    Returns
    -------
    str or None
        The problem, naming the keyword (a size that is not a positive finite number of
        degrees, an angle that is not a finite number); None when absent or usable.
    """
    for key in ("BMAJ", "BMIN"):
        if key in header:
            value = _number_or_nan(header.get(key))
            if not np.isfinite(value) or value <= 0:
                return f"header {key} = {header.get(key)!r} is not a positive beam size (deg)"
    if "BPA" in header and not np.isfinite(_number_or_nan(header.get("BPA"))):
        return f"header BPA = {header.get('BPA')!r} is not an angle (deg)"
    return None


def _number_or_nan(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return math.nan
    return float(value)


def beam_arcsec(header: Any) -> tuple[float, float, float] | None:
    """The restoring beam from the ``BMAJ``, ``BMIN`` and ``BPA`` keywords.

    Parameters
    ----------
    header
        A FITS header (``BMAJ``/``BMIN`` in degrees, ``BPA`` in degrees).

    Returns
    -------
    tuple or None
        (major FWHM [arcsec], minor FWHM [arcsec], position angle [deg]); a missing or bad
        ``BMIN`` is taken as ``BMAJ`` and ``BPA`` as 0. None without a valid ``BMAJ``.
    """
    bmaj = header.get("BMAJ")
    if not isinstance(bmaj, (int, float)) or not np.isfinite(bmaj) or bmaj <= 0:
        return None
    bmin = header.get("BMIN", bmaj)
    bpa = header.get("BPA", 0.0)
    if not isinstance(bmin, (int, float)) or not np.isfinite(bmin) or bmin <= 0:
        bmin = bmaj
    if not isinstance(bpa, (int, float)) or not np.isfinite(bpa):
        bpa = 0.0
    return float(bmaj) * 3600.0, float(bmin) * 3600.0, float(bpa)


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
