"""Image decoding for every service: bytes or pixel tensors in, 8-bit sRGB HxWx3 numpy arrays out.

Anything a person might send is handled (PNG/JPEG/WebP/BMP/TIFF/GIF, grayscale, palette, alpha,
16-bit, CMYK, EXIF orientation); anything broken raises InvalidArgument with a reason, never crashes.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from headforge.v1 import common_pb2
from services.common import tensors
from services.common.errors import InvalidArgument

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey bottom half
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")  # what the API documents; Pillow knows many more

DType = common_pb2.Tensor.DType
# the default cap on one input photo (width * height) of every service and of the recipes' intake: 48 MP
# phone photos pass
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


def decode_image(data: bytes, *, max_pixels: int, field: str = "image.encoded.data") -> np.ndarray:
    """Decode encoded image bytes to uint8 (H, W, 3) sRGB, EXIF orientation applied.

    Raises InvalidArgument(field) with reason IMAGE_EMPTY, IMAGE_UNDECODABLE, IMAGE_TRUNCATED or
    IMAGE_TOO_LARGE (width * height > max_pixels, checked from the header before decoding).
    """
    if not data:
        raise InvalidArgument(field, "image is empty (0 bytes)", reason="IMAGE_EMPTY")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = im.size
            _check_size(width, height, max_pixels, field)
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return _to_rgb8(im)
    except InvalidArgument:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidArgument(field, f"image too large to decode safely: {e}", reason="IMAGE_TOO_LARGE")
    except UnidentifiedImageError:
        raise InvalidArgument(field, "not an image: the bytes are in no supported format "
                              "(PNG, JPEG, WebP, BMP, TIFF, GIF)", reason="IMAGE_UNDECODABLE")
    except OSError as e:
        reason = "IMAGE_TRUNCATED" if "truncated" in str(e).lower() else "IMAGE_UNDECODABLE"
        raise InvalidArgument(field, f"cannot decode image: {e}", reason=reason)
    except MemoryError:
        raise InvalidArgument(field, "image too large to decode in memory", reason="IMAGE_TOO_LARGE")
    except Exception as e:  # Pillow plugins raise assorted errors (ValueError, SyntaxError, struct.error) on garbage
        raise InvalidArgument(field, f"cannot decode image: {type(e).__name__}: {e}",
                              reason="IMAGE_UNDECODABLE")


def _check_size(width: int, height: int, max_pixels: int, field: str) -> None:
    if width <= 0 or height <= 0:
        raise InvalidArgument(field, f"image has zero size ({width}x{height})", reason="IMAGE_EMPTY")
    if width * height > max_pixels:
        raise InvalidArgument(field, f"image is {width}x{height} = {width * height} pixels, "
                              f"over the limit of {max_pixels}", reason="IMAGE_TOO_LARGE",
                              metadata={"limit": str(max_pixels), "got": str(width * height)})


def _to_rgb8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if a.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        a = np.clip(a / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        hi = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        a = np.clip(np.nan_to_num(a) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.array(im.convert("RGB"), dtype=np.uint8)


def pixels_to_rgb8(msg: common_pb2.Tensor, *, max_pixels: int, field: str = "image.pixels") -> np.ndarray:
    """A pixel Tensor to uint8 (H, W, 3): float (3,H,W)/(1,3,H,W) in [0,1], or uint8 (H,W,3)."""
    a = tensors.from_proto(msg, field, dtypes=[DType.FLOAT32, DType.FLOAT16, DType.UINT8], ndim=(3, 4),
                           max_elements=3 * max_pixels)
    return array_to_rgb8(a, max_pixels=max_pixels, field=field)


def array_to_rgb8(a: np.ndarray, *, max_pixels: int, field: str = "image") -> np.ndarray:
    """uint8 (H, W, 3) as is; float (3, H, W) or (1, 3, H, W) in [0, 1] -> uint8 (H, W, 3)."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        if a.ndim != 3 or a.shape[2] != 3:
            raise InvalidArgument(f"{field}.shape", f"uint8 pixels must be (H, W, 3), got {list(a.shape)}")
        _check_size(a.shape[1], a.shape[0], max_pixels, field)
        return np.ascontiguousarray(a)
    if a.dtype.kind != "f":
        raise InvalidArgument(f"{field}.dtype", f"pixels must be uint8 or float, got {a.dtype}")
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise InvalidArgument(f"{field}.shape", f"one image expected, got batch of {a.shape[0]}")
        a = a[0]
    if a.ndim != 3 or a.shape[0] != 3:
        raise InvalidArgument(f"{field}.shape", f"float pixels must be (3, H, W), got {list(a.shape)}")
    _check_size(a.shape[2], a.shape[1], max_pixels, field)
    tensors.require_finite(a, field)
    a = a.astype(np.float32)
    if a.min() < -1e-3 or a.max() > 1 + 1e-3:
        raise InvalidArgument(field, f"float pixels must lie in [0, 1], got [{a.min():.3g}, {a.max():.3g}]")
    return np.ascontiguousarray((np.clip(a, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8))


def any_to_rgb8(image, *, max_pixels: int, field: str = "image") -> np.ndarray:
    """In-process entry: encoded bytes, a file path, or a pixel array (see array_to_rgb8)."""
    import os

    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            image = f.read()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), max_pixels=max_pixels, field=field)
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    return array_to_rgb8(image, max_pixels=max_pixels, field=field)


def image_input_to_rgb8(msg: common_pb2.ImageInput, *, max_pixels: int, field: str = "image") -> np.ndarray:
    """Decode an ImageInput (encoded bytes or pixels) to uint8 (H, W, 3)."""
    which = msg.WhichOneof("source")
    if which == "encoded":
        return decode_image(msg.encoded.data, max_pixels=max_pixels, field=f"{field}.encoded.data")
    if which == "pixels":
        return pixels_to_rgb8(msg.pixels, max_pixels=max_pixels, field=f"{field}.pixels")
    raise InvalidArgument(field, "no image given: set encoded or pixels", reason="IMAGE_EMPTY")


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W), (H, W, 3) or (H, W, 4) array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Inverse of encode_png for trusted bytes from a HeadForge server (keeps the channel count)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im)


def to_image_input(image) -> common_pb2.ImageInput:
    """Client side: bytes -> encoded; uint8 (H, W, 3) array -> pixels; str/Path -> file bytes."""
    import os

    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            image = f.read()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return common_pb2.ImageInput(encoded=common_pb2.EncodedImage(data=bytes(image)))
    return common_pb2.ImageInput(pixels=tensors.to_proto(np.asarray(image)))
