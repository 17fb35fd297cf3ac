"""The shared core: what more than one service needs and no service owns.

cameras (numpy pinhole cameras in the one convention), camera_batch (the torch batch renderers take),
volume (ray marching and compositing), planes (tri-plane / tri-grid feature sampling and the OSG
decoder), field_npz (the field file every field-producing service writes and the render service reads),
landmarks (the iBUG 68-point layout and the generic 3D template), models (model records and file
hashes), stores (tenant-capped expiring stores), registry (registered names).

Layering (tests/unit/test_layering.py): the core imports only protos, services.common and itself.
Services import the core, services.common and the generated protos, never each other.
"""
