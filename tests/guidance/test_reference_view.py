"""DistillRequest.reference (the photo's view and camera, for image-conditioned priors) survives the wire
both ways, and is checked: a reference without its camera, or the image_conditioned variant without a
reference, is InvalidArgument naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.core.cameras import orbit_camera
from services.guidance.convert import distill_from_proto, distill_to_proto
from services.guidance.types import DistillRequest, ReferenceView


def _request(**kw) -> DistillRequest:
    return DistillRequest(images=np.full((1, 3, 32, 32), 0.5, np.float32),
                          cameras=[orbit_camera(30, 0, 4, fov_deg=35, width=32, height=32)], **kw)


def test_the_reference_view_round_trips_through_the_proto():
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    camera = orbit_camera(0, 5, 4, fov_deg=30, width=48, height=48)
    back = distill_from_proto(distill_to_proto(_request(reference=ReferenceView(image, camera),
                                                        variant="image_conditioned")))
    assert back.variant == "image_conditioned" and np.array_equal(back.reference.image, image)
    assert np.allclose(back.reference.camera.world_to_camera, camera.world_to_camera, atol=1e-6)
    assert np.allclose(back.reference.camera.K, camera.K, atol=1e-4)
    assert distill_from_proto(distill_to_proto(_request())).reference is None


def test_a_reference_without_its_camera_is_refused():
    msg = distill_to_proto(_request(reference=ReferenceView(np.zeros((8, 8, 3), np.uint8),
                                                            orbit_camera(0, 0, 4, fov_deg=30, width=8, height=8))))
    msg.reference.ClearField("camera")
    with pytest.raises(InvalidArgument) as err:
        distill_from_proto(msg)
    assert err.value.field == "reference.camera"


def test_image_conditioned_without_a_reference_is_refused():
    from services.guidance.config import GuidanceConfig
    from services.guidance.service import GuidanceService

    service = GuidanceService(GuidanceConfig(backbones=[{"name": "oracle", "backend": "oracle"}], device="cpu"))
    with pytest.raises(InvalidArgument) as err:   # the oracle serves the variant; the request lacks its reference
        service.distill(_request(variant="image_conditioned"))
    assert err.value.field == "reference"
