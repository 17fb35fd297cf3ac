"""A photo -> an inverted 3D-GAN session: face analysis (the generator's crop style) then inversion of
the largest face, over any FaceClient and InversionClient (in-process or gRPC)."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.face.client import FaceClient
from services.face.types import AnalyzeOptions
from services.inversion.client import InversionClient
from services.inversion.types import GanCamera, InvertResult, InvertSettings, ProgressCallback


def invert_portrait(face_client: FaceClient, inversion_client: InversionClient, photo, *, generator: str = "",
                    settings: InvertSettings | None = None, use_mask: bool = True,
                    on_progress: ProgressCallback | None = None) -> InvertResult:
    """photo: encoded bytes, a path or uint8 (H, W, 3). The face is cropped in the style the generator
    was trained on (Describe's crop_style; "head" when unknown) and inverted from its crop camera
    (generator units), with its head mask unless use_mask is False.
    InvalidArgument reason NO_FACE when the photo has no face."""
    desc = inversion_client.describe()
    info = next((g for g in desc.generators if (g.name == generator) or (not generator and g.is_default)), None)
    style = (info.crop_style if info is not None else "") or "head"
    result = face_client.analyze(photo, AnalyzeOptions(max_faces=1, crop_style=style, skip_embedding=True,
                                                       skip_masks=not use_mask))
    if not result.faces:
        raise InvalidArgument("image", "no face found in the photo; inversion needs one face", reason="NO_FACE")
    face = result.faces[0]
    return inversion_client.invert(face.aligned_crop, GanCamera.generator(face.crop_camera), generator=generator,
                                   mask=face.crop_head_mask if use_mask else None, settings=settings,
                                   on_progress=on_progress)
