"""Your own files as samples: PNG, JPEG, TIFF, BMP (Pillow), DICOM (pydicom) and NIfTI (nibabel)
read into the stored format, uint8 at 0-255, channels first. One reader for preparing a folder
(medpipe.data.sources.folder) and for predicting (medpipe.predicting), so a file is turned into a
sample the same way at training and at prediction time.

The steps, in order: decode the file (DICOM: rescale slope/intercept, then the window); map the
intensities to 0-255 (`intensity`); invert MONOCHROME1; convert the channels (gray <-> RGB); resize
with anti-aliasing to the sample shape (images: Pillow's Lanczos filter; volumes: a Gaussian
pre-filter then trilinear interpolation, scipy). A file already at the sample's size and in 8 bits
is taken as it is, value for value.

intensity:
  auto    8-bit data as it is; DICOM with its own window (WindowCenter/Width, a VOI LUT) through it;
          anything else per sample min-max to 0-255
  minmax  per sample min-max to 0-255
  window  the fixed `window: [center, width]` (e.g. CT lung [-600, 1500]), values outside clipped

A NIfTI's data array (i, j, k) becomes the volume (D=k, H=j, W=i): slices along its third axis;
with `canonical: true` (default) it is first reoriented to the closest RAS orientation, so scans
from different scanners share one axis order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
INTENSITY = ("auto", "minmax", "window")


def file_format(path: Path) -> str | None:
    """image | dicom | nifti by the file's name, or a DICOM without suffix by its preamble
    ('DICM' at byte 128); None for anything else."""
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if "." not in name and path.is_file():
        try:
            with open(path, "rb") as f:
                f.seek(128)
                if f.read(4) == b"DICM":
                    return "dicom"
        except OSError:
            return None
    return None


@dataclass
class Decoded:
    """A file's pixels before the intensity mapping: (F, H, W) or (F, H, W, 3) for images and DICOM
    (F frames; one for single images), (D, H, W) for volumes."""

    pixels: np.ndarray
    eight_bit: bool  # stored in 8 bits without rescaling: taken as it is
    rgb: bool
    window: tuple[float, float] | None = None  # the file's own (center, width), DICOM
    invert: bool = False  # MONOCHROME1: low values are bright
    voi: Any = None  # a DICOM dataset whose VOI LUT maps the pixels (intensity auto)
    patient: str | None = None  # DICOM PatientID: only ever used to group, never stored


@dataclass(frozen=True)
class InputSpec:
    """How a file becomes one stored sample: its kind, the sample shape (channels first) and the
    intensity rules. Built from a data config (folder sources) or a trained model's data (predict)."""

    kind: str  # image | volume
    shape: tuple[int, ...]  # (C, H, W) or (1, D, H, W)
    intensity: str = "auto"
    window: tuple[float, float] | None = None
    canonical: bool = True

    @property
    def channels(self) -> int:
        return int(self.shape[0])

    @classmethod
    def from_options(cls, kind: str, shape: Any, opts: dict[str, Any]) -> InputSpec:
        window = opts.get("window")
        return cls(
            kind=kind,
            shape=tuple(int(v) for v in shape),
            intensity=str(opts.get("intensity") or "auto"),
            window=None if window is None else (float(window[0]), float(window[1])),
            canonical=bool(opts.get("canonical", True)),
        )


# -- decoding ----------------------------------------------------------------------------------
def _first(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and len(value) else float(value)
    except (TypeError, ValueError):
        return None


def _decoder_hint(message: str) -> str:
    """pydicom names the plugins a compressed transfer syntax needs; say what to install."""
    needs = [
        line.split("requires", 1)[1].strip().replace(" and ", " + ")
        for line in message.splitlines()
        if "requires" in line
    ]
    return "; install one of: " + " | ".join(needs) if needs else ""


def read_dicom_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({str(err).splitlines()[0]})") from None


def dicom_frames(path: Path) -> int:
    """Frames of a DICOM (1 for a single image), from its header only."""
    return max(1, int(read_dicom_header(path).get("NumberOfFrames", 1) or 1))


def decode_dicom(path: Path) -> Decoded:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({str(err).splitlines()[0]})") from None
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM without pixel data (a report or structured document?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = ds.pixel_array
    except RuntimeError as err:  # a compressed transfer syntax without its decoder
        syntax = ds.file_meta.get("TransferSyntaxUID")
        name = getattr(syntax, "name", str(syntax))
        raise DataError(
            f"{path}: compressed DICOM ({name}) and no decoder for it is installed"
            f"{_decoder_hint(str(err))}"
        ) from None
    except (ValueError, AttributeError, TypeError) as err:
        raise DataError(
            f"{path}: unreadable DICOM pixel data ({str(err).splitlines()[0]}); truncated or "
            "corrupt file?"
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    rgb = int(ds.get("SamplesPerPixel", 1) or 1) == 3
    frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
    pixels = raw if frames > 1 else raw[None]
    has_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds
    if has_rescale and not rgb:
        pixels = np.asarray(apply_modality_lut(pixels, ds), np.float64)
    bits = int(ds.get("BitsStored", 8) or 8)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    voi = ds if "VOILUTSequence" in ds else None
    return Decoded(
        pixels=pixels,
        eight_bit=bits <= 8 and not has_rescale and pixels.dtype == np.uint8,
        rgb=rgb,
        window=(center, width) if center is not None and width else None,
        invert=photometric == "MONOCHROME1",
        voi=voi,
        patient=str(ds.get("PatientID", "") or "") or None,
    )


def decode_image(path: Path) -> Decoded:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            n = int(getattr(im, "n_frames", 1) or 1)
            frames = [_pil_array(im)]
            for i in range(1, n):  # the pages of a multi-page TIFF
                im.seek(i)
                frames.append(_pil_array(im))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({str(err).splitlines()[0]})") from None
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DataError(f"{path}: its {n} frames differ in size ({sorted(shapes)})")
    pixels = frames[0][None] if n == 1 else np.stack(frames)
    return Decoded(pixels, eight_bit=pixels.dtype == np.uint8, rgb=pixels.ndim == 4)


def _pil_array(im) -> np.ndarray:
    """An image's pixels: uint8 (H, W) or (H, W, 3); 16-bit and float modes as they are."""
    if im.mode in ("L", "RGB"):
        return np.asarray(im)
    if im.mode in ("1", "P", "LA", "PA"):
        return np.asarray(im.convert("RGB" if im.mode in ("P", "PA") else "L"))
    if im.mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(im.convert("RGB"))
    return np.asarray(im).astype(np.float64)  # I;16, I, F: intensities beyond 8 bits


def decode_nifti(path: Path, canonical: bool) -> Decoded:
    import nibabel as nib

    try:
        img = nib.load(path)
        if canonical:
            img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for bad files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable NIfTI file ({msg})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(
            f"{path}: NIfTI data of shape {data.shape}; expected one 3D volume (i, j, k)"
        )
    return Decoded(np.ascontiguousarray(data.transpose(2, 1, 0)), data.dtype == np.uint8, False)


def decode(path: Path, spec: InputSpec, fmt: str | None = None) -> Decoded:
    fmt = fmt or file_format(path)
    if fmt is None:
        raise DataError(
            f"{path}: not a supported file (images: {', '.join(IMAGE_SUFFIXES)}; DICOM: .dcm; "
            "NIfTI: .nii, .nii.gz)"
        )
    if fmt == "image":
        return decode_image(path)
    if fmt == "dicom":
        return decode_dicom(path)
    return decode_nifti(path, spec.canonical)


# -- to the stored format ------------------------------------------------------------------------
def to_uint8(d: Decoded, pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One frame or volume's intensities at 0-255 (uint8), by the spec's intensity rule."""
    window = spec.window if spec.intensity == "window" else None
    if spec.intensity == "auto":
        if d.voi is not None:
            from pydicom.pixels import apply_voi_lut

            pixels = np.asarray(apply_voi_lut(pixels, d.voi), np.float64)
        elif d.window is not None:
            window = d.window
        elif d.eight_bit:
            out = np.asarray(pixels, np.uint8)
            return 255 - out if d.invert else out
    values = np.asarray(pixels, np.float64)
    if window is not None:
        center, width = window
        low, high = center - width / 2, center + width / 2
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    span = high - low
    scaled = np.zeros_like(values) if span <= 0 else (values - low) * (255.0 / span)
    out = np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)
    return 255 - out if d.invert else out


def _channels(frame: np.ndarray, channels: int) -> tuple[np.ndarray, str | None]:
    """(H, W) or (H, W, 3) uint8 -> (C, H, W); a note when gray and RGB were converted."""
    from PIL import Image

    if frame.ndim == 3 and channels == 1:
        gray = np.asarray(Image.fromarray(frame, "RGB").convert("L"))
        return gray[None], "RGB converted to gray (ITU-R 601 luma)"
    if frame.ndim == 2 and channels == 3:
        return np.repeat(frame[None], 3, axis=0), "gray repeated into 3 RGB channels"
    if frame.ndim == 3:
        return frame.transpose(2, 0, 1), None
    return frame[None], None


def _resize_image(chw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if chw.shape[1:] == tuple(size):
        return chw
    h, w = size
    planes = [
        np.asarray(Image.fromarray(p, "L").resize((w, h), Image.Resampling.LANCZOS)) for p in chw
    ]
    return np.stack(planes)


def resample_volume(vol: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (D, H, W) -> uint8 `shape`: Gaussian anti-aliasing where an axis shrinks, then
    trilinear interpolation (scipy.ndimage)."""
    if vol.shape == tuple(shape):
        return vol
    from scipy import ndimage

    factors = [s / v for s, v in zip(shape, vol.shape, strict=True)]
    x = vol.astype(np.float32)
    sigma = [max(0.0, (1 / f - 1) / 2) for f in factors]
    if any(s > 0 for s in sigma):
        x = ndimage.gaussian_filter(x, sigma, mode="nearest")
    x = ndimage.zoom(x, factors, order=1, mode="nearest", grid_mode=True)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def samples_of(path: Path, spec: InputSpec) -> tuple[list[np.ndarray], list[str]]:
    """The stored samples a file gives (an image: one per frame; a volume: one) and notes on
    what was converted. One DataError naming the file for anything unreadable or unfit."""
    fmt = file_format(path)
    d = decode(path, spec, fmt)
    notes: list[str] = []
    if spec.kind == "volume":
        pixels = d.pixels
        if pixels.ndim != 3 or d.rgb:
            raise DataError(f"{path}: an RGB image, not a volume; this model reads volumes")
        if pixels.shape[0] == 1:
            raise DataError(
                f"{path}: a single 2D image (1 frame), not a volume; this model reads volumes "
                f"(D, H, W) = {tuple(spec.shape[1:])}"
            )
        vol = resample_volume(to_uint8(d, pixels, spec), tuple(spec.shape[1:]))
        return [vol[None]], notes
    if fmt == "nifti" and d.pixels.shape[0] > 1:
        raise DataError(
            f"{path}: a volume of shape {d.pixels.shape[::-1]} (i, j, k); this model reads 2D "
            f"images (C, H, W) = {tuple(spec.shape)}"
        )
    out = []
    for frame in d.pixels:
        chw, note = _channels(to_uint8(d, frame, spec), spec.channels)
        if note and note not in notes:
            notes.append(note)
        out.append(_resize_image(chw, tuple(spec.shape[1:])))
    return out, notes


def write_nifti(path: str | Path, volume: np.ndarray) -> None:
    """Write a (D, H, W) volume as NIfTI the way `samples_of` reads it back (identity affine)."""
    import nibabel as nib

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), np.eye(4)), path)
