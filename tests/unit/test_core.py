"""The shared core's generic pieces on their own: the tenant-capped store, the registry, the field file
and the model-file hash (the services' own tests cover them through real calls)."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from services.common.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from services.core.field_npz import FieldArrays, read_field_npz, write_field_npz
from services.core.models import file_sha256
from services.core.registry import Registry
from services.core.stores import StoreCaps, TenantStore, new_id


@dataclass
class Item:
    id: str
    tenant: str
    nbytes: int
    last_used: float = 0.0


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def store(clock, **caps) -> TenantStore[Item]:
    return TenantStore("widget", StoreCaps(10.0, **caps), size_of=lambda i: i.nbytes, clock=clock,
                       close_hint="CloseWidget")


def test_store_caps_name_their_limit():
    s = store(Clock(), per_tenant=(2, "max_widgets"), item_bytes=(100, "max_widget_bytes"),
              tenant_bytes=(150, "max_tenant_bytes"), total_bytes=(250, "max_total_bytes"))
    with pytest.raises(ResourceExhausted) as e:
        s.add(Item(new_id(), "a", 101))
    assert e.value.reason == "WIDGET_TOO_LARGE" and e.value.metadata == {"limit": "max_widget_bytes",
                                                                         "value": "100", "got": "101"}
    s.add(Item(new_id(), "a", 100))
    with pytest.raises(ResourceExhausted) as e:
        s.reserve("a", 60)
    assert e.value.reason == "TENANT_MEMORY"
    s.add(Item(new_id(), "a", 50))
    with pytest.raises(ResourceExhausted) as e:
        s.add(Item(new_id(), "a", 1))
    assert e.value.reason == "TOO_MANY_WIDGETS" and "CloseWidget" in e.value.message
    s.add(Item(new_id(), "b", 100))
    with pytest.raises(ResourceExhausted) as e:
        s.add(Item(new_id(), "c", 1))
    assert e.value.reason == "SERVER_MEMORY" and e.value.metadata["limit"] == "max_total_bytes"
    assert s.count() == 3 and s.count("a") == 2


def test_store_expiry_refresh_and_ownership():
    clock = Clock()
    s = store(clock)
    item = s.add(Item(new_id(), "a", 1))
    clock.now += 8
    assert s.get("a", item.id) is item          # refreshed at 108
    clock.now += 8
    assert s.expires_in(item) == pytest.approx(2.0)
    with pytest.raises(PermissionDenied):
        s.get("b", item.id)
    clock.now += 3
    with pytest.raises(NotFound) as e:
        s.get("a", item.id)
    assert e.value.reason == "WIDGET_NOT_FOUND" and s.count() == 0


def test_store_that_hides_other_tenants_and_does_not_refresh():
    clock = Clock()
    s = TenantStore("asset", StoreCaps(10.0), clock=clock, refresh_on_get=False, hide_other_tenants=True)
    item = s.add(Item(new_id(), "a", 1))
    with pytest.raises(NotFound):
        s.get("b", item.id)                      # another tenant's id reads as unknown
    clock.now += 6
    s.get("a", item.id)
    clock.now += 5
    with pytest.raises(NotFound):
        s.get("a", item.id)                      # reads did not extend its life


def test_registry_lists_known_names_and_loads_lazily():
    reg: Registry = Registry("widget kind")
    reg.register("eager", len)

    @reg.register("decorated")
    def decorated():
        return 1

    reg.register("lazy", "json:dumps")
    assert reg.names() == ["decorated", "eager", "lazy"] and "lazy" in reg
    assert reg.get("eager") is len and reg.get("decorated") is decorated
    assert reg.get("lazy")({"a": 1}) == '{"a": 1}'
    with pytest.raises(InvalidArgument) as e:
        reg.get("nope", field="init.kind")
    assert e.value.violations[0].field == "init.kind" and "decorated, eager, lazy" in e.value.message.replace("'", "")
    with pytest.raises(ValueError, match="twice"):
        reg.register("eager", max)


def test_lazy_registry_entry_is_not_imported_until_used():
    reg: Registry = Registry("thing")
    reg.register("colorsys", "colorsys:rgb_to_hsv")
    sys.modules.pop("colorsys", None)
    reg.names()
    assert "colorsys" not in sys.modules
    assert reg.get("colorsys")(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)


def _field(kind="trigrid") -> FieldArrays:
    rng = np.random.default_rng(0)
    shape = (3, 8, 4, 4) if kind == "triplane" else (3, 2, 8, 4, 4)
    return FieldArrays(kind, {"planes": rng.normal(size=shape).astype(np.float32)},
                       [(rng.normal(size=(16, 8)), rng.normal(size=16)), (rng.normal(size=(5, 16)), rng.normal(size=5))],
                       {"box_size": 1.5, "plane_axes": "panohead", "not_a_setting": 1})


def test_field_file_round_trip_and_half_grids():
    f = _field()
    back = read_field_npz(write_field_npz(f))
    assert back.kind == "trigrid" and (back.channels, back.depth, back.resolution) == (8, 2, 4)
    assert back.hidden == [16] and back.rgb_channels == 4
    assert back.meta == {"box_size": 1.5, "plane_axes": "panohead"}     # unknown keys are not carried
    np.testing.assert_array_equal(back.grids["planes"], f.grids["planes"])
    half = read_field_npz(write_field_npz(f, grid_dtype="float16"))
    assert half.grids["planes"].dtype == np.float16 and half.decoder[0][0].dtype == np.float32


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.pop("kind"), "missing 'kind'"),
    (lambda a: a.__setitem__("planes", a["planes"][:2]), "planes must be"),
    (lambda a: a.__setitem__("decoder.1.weight", a["decoder.1.weight"][:, :3]), "decoder.1 has weight"),
    (lambda a: a.__setitem__("planes", np.full_like(a["planes"], np.nan)), "NaN"),
    (lambda a: a.__setitem__("extra", np.zeros(1)), "unexpected arrays"),
])
def test_bad_field_files_name_the_problem(mutate, message):
    with np.load(io.BytesIO(write_field_npz(_field())), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    mutate(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(InvalidArgument, match=message) as e:
        read_field_npz(buf.getvalue())
    assert e.value.reason == "ASSET_UNDECODABLE"


def test_file_hash_follows_the_file(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    first = file_sha256(a)
    assert len(first) == 16 and file_sha256(a) == first
    assert file_sha256(a, b) != file_sha256(b, a)
    a.write_bytes(b"three")
    os.utime(a, ns=(1, 1))                  # a different size and mtime: the cache must not answer
    assert file_sha256(a) != first
