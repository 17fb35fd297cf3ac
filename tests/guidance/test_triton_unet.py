"""The Triton-served UNet (services/guidance/backbones/triton_unet.py, triton_repo.py, triton_server.py).

Three levels:
- a REAL NVIDIA Triton Inference Server (the `tritonserver` binary of the nvidia-pytriton wheel, or any other
  found by services.guidance.triton_server.find_tritonserver) serving the repository write_triton_repository
  writes; skipped with the reason when none is installed (set HEADFORGE_TRITON_VENV to a venv holding
  nvidia-pytriton, torch and diffusers, or HEADFORGE_TRITONSERVER to a binary);
- the generated python-backend model.py, run in this process with a fake `triton_python_backend_utils`;
- the client against a STAND-IN for Triton: a gRPC server in this process that speaks Triton's
  GRPCInferenceService protocol (the service protos tritonclient ships) and runs the in-process UNet. It is
  not Triton; it checks TritonUNet's side of the protocol (metadata checks, splitting, errors, timeouts).
The UNet is a tiny random UNet2DConditionModel made here with a fixed seed and saved with save_pretrained.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from concurrent import futures

import numpy as np
import pytest
import torch

grpc = pytest.importorskip("grpc")
pytest.importorskip("tritonclient.grpc")
diffusers = pytest.importorskip("diffusers")

from google.protobuf import json_format, text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc  # noqa: E402

from services.common.errors import (DeadlineExceeded, FailedPrecondition, ResourceExhausted,  # noqa: E402
                                    Unavailable)
from services.guidance.backbones.base import ModelFilesError  # noqa: E402
from services.guidance.backbones.triton_unet import TritonUNet  # noqa: E402
from services.guidance.triton_repo import write_triton_repository  # noqa: E402
from services.common.process import free_port  # noqa: E402
from services.guidance.triton_server import find_tritonserver, start_tritonserver  # noqa: E402

CROSS_DIM = 32


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    """(unet folder, in-process model): a tiny random SD-style UNet in the real diffusers on-disk format."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=CROSS_DIM, attention_head_dim=8,
        norm_num_groups=8, sample_size=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    unet_dir = tmp_path_factory.mktemp("sd") / "unet"
    unet.save_pretrained(unet_dir)
    return unet_dir, unet.eval()


def inputs(batch: int, seed: int = 0, hw: int = 8, length: int = 7):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, hw, hw, generator=g)
    t = torch.randint(1, 1000, (batch,), generator=g)
    text = torch.randn(batch, length, CROSS_DIM, generator=g)
    return sample, t, text


def reference(unet, sample, t, text) -> torch.Tensor:
    with torch.no_grad():
        return unet(sample, t, encoder_hidden_states=text, return_dict=False)[0]


# --- the stand-in for Triton ---------------------------------------------------------------------------------

class StandInTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """NOT Triton: a minimal in-process server for Triton's gRPC protocol (ServerLive, ModelReady,
    ModelMetadata, ModelConfig, ModelInfer with raw tensor contents), running the in-process UNet, with knobs
    to misdescribe the model, delay or fail. Only for testing the client side of the protocol."""

    def __init__(self, unet, model_name: str = "unet", max_batch_size: int = 4):
        self.unet = unet
        self.model_name = model_name
        self.max_batch_size = max_batch_size
        self.inputs = [("sample", "FP32", [-1, 4, -1, -1]), ("timestep", "INT64", [-1, 1]),
                       ("encoder_hidden_states", "FP32", [-1, -1, CROSS_DIM])]
        self.outputs = [("noise_pred", "FP32", [-1, 4, -1, -1])]
        self.ready = True
        self.delay_s = 0.0
        self.fail_with: tuple[grpc.StatusCode, str] | None = None
        self.batch_sizes: list[int] = []
        self.lock = threading.Lock()

    def _model(self, name, context):
        if name != self.model_name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        self._model(request.name, context)
        return service_pb2.ModelReadyResponse(ready=self.ready)

    def ModelMetadata(self, request, context):
        self._model(request.name, context)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=self.model_name, versions=["1"], platform="python",
            inputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in self.inputs],
            outputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in self.outputs])

    def ModelConfig(self, request, context):
        self._model(request.name, context)
        return service_pb2.ModelConfigResponse(config=model_config_pb2.ModelConfig(
            name=self.model_name, backend="python", max_batch_size=self.max_batch_size))

    def ModelInfer(self, request, context):
        self._model(request.model_name, context)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_with is not None:
            context.abort(*self.fail_with)
        arrays = {}
        for tensor, raw in zip(request.inputs, request.raw_input_contents):
            dtype = {"FP32": np.float32, "INT64": np.int64}[tensor.datatype]
            arrays[tensor.name] = np.frombuffer(raw, dtype).reshape(list(tensor.shape))
        b = arrays["sample"].shape[0]
        if b > self.max_batch_size:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"batch {b} > max_batch_size {self.max_batch_size}")
        with self.lock:
            self.batch_sizes.append(b)
        out = reference(self.unet, torch.from_numpy(arrays["sample"].copy()),
                        torch.from_numpy(arrays["timestep"].reshape(-1).copy()),
                        torch.from_numpy(arrays["encoder_hidden_states"].copy())).numpy()
        response = service_pb2.ModelInferResponse(model_name=self.model_name, model_version="1", id=request.id)
        output = response.outputs.add()
        output.name, output.datatype = "noise_pred", "FP32"
        output.shape.extend(out.shape)
        response.raw_output_contents.append(out.astype(np.float32).tobytes())
        return response


@pytest.fixture
def standin(tiny_unet):
    servicer = StandInTriton(tiny_unet[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(grace=None)


# --- client against the stand-in -----------------------------------------------------------------------------

def test_standin_outputs_equal_inprocess_unet(tiny_unet, standin):
    unet_dir, unet = tiny_unet
    url, servicer = standin
    with TritonUNet(url, unet_dir) as remote:
        assert remote.config.in_channels == 4 and remote.config.sample_size == 8
        assert remote.config.cross_attention_dim == CROSS_DIM
        for batch in (1, 3):
            sample, t, text = inputs(batch, seed=batch)
            (got,) = remote(sample, t, text, return_dict=False)
            torch.testing.assert_close(got, reference(unet, sample, t, text), atol=1e-5, rtol=0)
        # diffusers-style call forms: scalar timestep, keyword text, return_dict=True, None-valued kwargs.
        sample, _, text = inputs(2, seed=9)
        out = remote(sample, 500, encoder_hidden_states=text, return_dict=True,
                     down_block_additional_residuals=None, cross_attention_kwargs={})
        torch.testing.assert_close(out.sample, reference(unet, sample, torch.tensor([500, 500]), text),
                                   atol=1e-5, rtol=0)
        # Results follow the sample's dtype.
        half = remote(sample.half(), torch.tensor(500), text)[0]
        assert half.dtype == torch.float16 and half.shape == sample.shape
    assert servicer.batch_sizes == [1, 3, 2, 2]


def test_rows_above_max_batch_size_are_split(tiny_unet, standin):
    unet_dir, unet = tiny_unet
    url, servicer = standin
    servicer.max_batch_size = 2
    with TritonUNet(url, unet_dir) as remote:
        sample, t, text = inputs(5, seed=5)
        got = remote(sample, t, text)[0]
    torch.testing.assert_close(got, reference(unet, sample, t, text), atol=1e-5, rtol=0)
    assert sorted(servicer.batch_sizes) == [1, 2, 2]


@pytest.mark.parametrize("change, needle", [
    (lambda s: s.inputs.__setitem__(0, ("sample", "FP32", [-1, 3, -1, -1])), "input 'sample' has shape [-1, 3"),
    (lambda s: s.inputs.__setitem__(1, ("timestep", "FP32", [-1, 1])), "input 'timestep' has datatype FP32"),
    (lambda s: s.inputs.__setitem__(2, ("text", "FP32", [-1, -1, CROSS_DIM])),
     "input 'encoder_hidden_states' is missing"),
    (lambda s: s.inputs.__setitem__(2, ("encoder_hidden_states", "FP32", [-1, -1, 768])),
     "input 'encoder_hidden_states' has shape [-1, -1, 768]"),
    (lambda s: s.outputs.__setitem__(0, ("out", "FP32", [-1, 4, -1, -1])), "output 'noise_pred' is missing"),
])
def test_metadata_mismatch_is_model_files_error(tiny_unet, standin, change, needle):
    unet_dir, _ = tiny_unet
    url, servicer = standin
    change(servicer)
    with pytest.raises(ModelFilesError) as info:
        TritonUNet(url, unet_dir)
    assert needle in str(info.value)
    assert url in str(info.value) and "'unet'" in str(info.value)
    assert info.value.reason == "MODEL_FILES"


def test_unknown_model_and_unready_model(tiny_unet, standin):
    unet_dir, _ = tiny_unet
    url, servicer = standin
    with pytest.raises(ModelFilesError, match="'sd_unet'.*no such model"):
        TritonUNet(url, unet_dir, model_name="sd_unet")
    servicer.ready = False
    with pytest.raises(Unavailable, match="not ready"):
        TritonUNet(url, unet_dir, ready_timeout_s=0.3)


def test_unreachable_server_is_unavailable(tiny_unet):
    unet_dir, _ = tiny_unet
    url = f"127.0.0.1:{free_port()}"   # nothing listens there
    start = time.monotonic()
    with pytest.raises(Unavailable) as info:
        TritonUNet(url, unet_dir, connect_timeout_s=5)
    assert url in str(info.value) and info.value.reason == "TRITON_UNREACHABLE"
    assert time.monotonic() - start < 10


def test_missing_local_config_is_model_files_error(tmp_path, standin):
    with pytest.raises(ModelFilesError, match="config.json"):
        TritonUNet(standin[0], tmp_path / "nowhere")


def test_unsupported_kwargs_fail_clearly(tiny_unet, standin):
    unet_dir, _ = tiny_unet
    url, servicer = standin
    sample, t, text = inputs(1)
    with TritonUNet(url, unet_dir) as remote:
        residuals = [torch.zeros(1, 32, 8, 8)]
        with pytest.raises(FailedPrecondition, match="ControlNet residuals.*not supported.*Triton") as info:
            remote(sample, t, text, down_block_additional_residuals=residuals,
                   mid_block_additional_residual=torch.zeros(1, 64, 4, 4))
        assert info.value.reason == "TRITON_UNSUPPORTED"
        with pytest.raises(FailedPrecondition, match="IP-adapter"):
            remote(sample, t, text, added_cond_kwargs={"image_embeds": [torch.zeros(1, 1, 512)]})
        with pytest.raises(FailedPrecondition, match="LoRA"):
            remote(sample, t, text, cross_attention_kwargs={"scale": 0.5})
        with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
            remote(sample, t, text, bogus=1)
        with pytest.raises(ValueError, match="integers"):
            remote(sample, torch.tensor([10.5]), text)
    assert servicer.batch_sizes == []   # nothing reached the server


def test_timeouts_and_grpc_errors_map_to_service_errors(tiny_unet, standin):
    unet_dir, _ = tiny_unet
    url, servicer = standin
    sample, t, text = inputs(1)
    with TritonUNet(url, unet_dir, client_timeout_s=0.3) as remote:
        servicer.delay_s = 1.5
        with pytest.raises(DeadlineExceeded, match="'unet'"):
            remote(sample, t, text)
        servicer.delay_s = 0.0
        servicer.fail_with = (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        with pytest.raises(ResourceExhausted, match="queue full"):
            remote(sample, t, text)
        servicer.fail_with = (grpc.StatusCode.UNAVAILABLE, "model unloading")
        with pytest.raises(Unavailable, match="model unloading"):
            remote(sample, t, text)


# --- the repository and its model.py -------------------------------------------------------------------------

def test_repository_layout_and_config(tiny_unet, tmp_path):
    unet_dir, _ = tiny_unet
    model_dir = write_triton_repository(unet_dir, tmp_path / "repo", max_batch_size=8, max_queue_delay_us=500,
                                        preferred_batch_sizes=(4, 8))
    assert model_dir == tmp_path / "repo" / "unet"
    assert (model_dir / "1" / "model.py").is_file()
    assert (model_dir / "1" / "unet" / "config.json").is_file()
    assert (model_dir / "1" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == "unet" and config.backend == "python" and config.max_batch_size == 8
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("sample", "TYPE_FP32", [4, -1, -1]), ("timestep", "TYPE_INT64", [1]),
        ("encoder_hidden_states", "TYPE_FP32", [-1, CROSS_DIM])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("noise_pred", [4, -1, -1])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    with pytest.raises(FileExistsError):
        write_triton_repository(unet_dir, tmp_path / "repo")
    linked = write_triton_repository(unet_dir, tmp_path / "repo2", weights="symlink")
    assert (linked / "1" / "unet" / "diffusion_pytorch_model.safetensors").is_symlink()


def test_repository_rejects_bad_unet_folders(tmp_path):
    with pytest.raises(ModelFilesError, match="config.json"):
        write_triton_repository(tmp_path, tmp_path / "repo")
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", "in_channels": 4,
                                                      "cross_attention_dim": 32}))
    with pytest.raises(ModelFilesError, match="safetensors"):
        write_triton_repository(tmp_path, tmp_path / "repo")
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "in_channels": 3}))
    with pytest.raises(ModelFilesError, match="AutoencoderKL"):
        write_triton_repository(tmp_path, tmp_path / "repo")


class _FakePbUtils:
    """The parts of Triton's triton_python_backend_utils that model.py uses (for running it in-process)."""

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, array

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        def __init__(self, message):
            self.message = message

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return request.get(name)


def test_generated_model_py_batches_requests_like_the_unet(tiny_unet, tmp_path, monkeypatch):
    """model.py as Triton's python backend runs it: initialize(args) with the config as JSON, then execute()
    with several requests at once (what the dynamic batcher hands over), including one malformed request."""
    unet_dir, unet = tiny_unet
    model_dir = write_triton_repository(unet_dir, tmp_path / "repo")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _FakePbUtils)
    spec = importlib.util.spec_from_file_location("headforge_triton_unet_model", model_dir / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
                      "model_repository": str(model_dir), "model_version": "1", "model_instance_kind": "CPU",
                      "model_instance_device_id": "0"})
    batches = [inputs(1, seed=1), inputs(2, seed=2), inputs(1, seed=3, hw=16)]

    def request(sample, t, text):
        return {"sample": _FakePbUtils.Tensor("sample", sample.numpy()),
                "timestep": _FakePbUtils.Tensor("timestep", t.numpy().reshape(-1, 1)),
                "encoder_hidden_states": _FakePbUtils.Tensor("encoder_hidden_states", text.numpy())}

    bad = request(*inputs(2, seed=4))
    bad["timestep"] = _FakePbUtils.Tensor("timestep", np.zeros((1, 1), np.int64))
    responses = model.execute([request(*b) for b in batches] + [bad])
    for (sample, t, text), response in zip(batches, responses):
        assert response.error is None
        (tensor,) = response.output_tensors
        assert tensor.name() == "noise_pred"
        np.testing.assert_allclose(tensor.as_numpy(), reference(unet, sample, t, text).numpy(), atol=1e-4, rtol=0)
    assert responses[-1].error is not None and "inconsistent shapes" in responses[-1].error.message


# --- a real Triton Inference Server --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_triton(tiny_unet, tmp_path_factory):
    install = find_tritonserver()
    if install is None:
        pytest.skip("no Triton server installed: set HEADFORGE_TRITON_VENV to a venv with nvidia-pytriton, torch "
                    "and diffusers (see services/guidance/triton_server.py), or HEADFORGE_TRITONSERVER")
    unet_dir, _ = tiny_unet
    work = tmp_path_factory.mktemp("triton")
    # A long queue delay so that concurrent single-row requests are certainly batched together.
    write_triton_repository(unet_dir, work / "repo", max_batch_size=8, max_queue_delay_us=300_000,
                            preferred_batch_sizes=(8,), instance_kind="KIND_CPU", torch_num_threads=1)
    server = start_tritonserver(install, work / "repo", free_port(), free_port(), work_dir=work,
                                ready_timeout_s=240)
    yield server
    server.stop()


def test_real_triton_matches_inprocess_and_batches(tiny_unet, real_triton):
    unet_dir, unet = tiny_unet
    with TritonUNet(real_triton.grpc_url, unet_dir) as remote:
        assert remote.max_batch_size == 8
        for batch in (1, 3):
            sample, t, text = inputs(batch, seed=10 + batch)
            (got,) = remote(sample, t, text)
            torch.testing.assert_close(got, reference(unet, sample, t, text), atol=1e-4, rtol=0)

        def stats():
            (model,) = remote.statistics()["model_stats"]
            return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))

        before = stats()
        rows = [inputs(1, seed=100 + i) for i in range(8)]
        with futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda r: remote(*r)[0], rows))
        for r, got in zip(rows, results):
            torch.testing.assert_close(got, reference(unet, *r), atol=1e-4, rtol=0)
        after = stats()
        inferences, executions = after[0] - before[0], after[1] - before[1]
        assert inferences == 8
        assert executions < 8, f"Triton ran {executions} executions for 8 concurrent requests (no batching)"
        batch_sizes = {int(b["batch_size"]) for b in remote.statistics()["model_stats"][0].get("batch_stats", [])}
        assert max(batch_sizes) > 1

    with pytest.raises(ModelFilesError, match="no such model"):
        TritonUNet(real_triton.grpc_url, unet_dir, model_name="missing")
