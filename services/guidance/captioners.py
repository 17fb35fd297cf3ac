"""Image-captioning models behind the guidance service's Caption RPC, by config `kind`:

- "blip2": transformers Blip2ForConditionalGeneration + its processor (AutoProcessor: Blip2Processor =
  BLIP image processor + the language model's tokenizer), e.g. Salesforce/blip2-opt-2.7b;
- "blip": BlipForConditionalGeneration + BlipProcessor, e.g. Salesforce/blip-image-captioning-large.

Each folder is what `save_pretrained` writes (config.json, model.safetensors, the processor and tokenizer
files). A captioner loads on its first Caption (the service starts without touching its weights), once, and
serves every caller after that under one lock. Decoding is greedy (do_sample False, one beam): the same
picture, prompt and max_new_tokens give the same caption. The caption is the decoded sequence: the prompt
(when given) followed by the generated tokens, special tokens removed, whitespace stripped.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from services.core.models import ModelRecord, file_sha256, folder_provenance
from services.guidance.backbones.base import ModelFilesError
from services.guidance.config import CaptionerConfig
from services.guidance.types import CaptionerInfo


def _blip2():
    from transformers import Blip2ForConditionalGeneration

    return Blip2ForConditionalGeneration


def _blip():
    from transformers import BlipForConditionalGeneration

    return BlipForConditionalGeneration


KINDS = {"blip2": _blip2, "blip": _blip}   # kind -> the model class (imported on first load)


class Captioner:
    """One configured captioner; `caption` loads it on first use."""

    def __init__(self, config: CaptionerConfig, base_dir: Path, device: torch.device, is_default: bool):
        """ModelFilesError when the folder or its config.json is not there (checked now; the weights load later)."""
        path = Path(config.path)
        self.path = path if path.is_absolute() else Path(base_dir) / path
        if not (self.path / "config.json").is_file():
            raise ModelFilesError(f"captioner {config.name!r}: no {config.kind} model folder at {self.path} (expected "
                                  "config.json, model.safetensors and the processor / tokenizer files that "
                                  "save_pretrained writes; README: Pointing HeadForge at real model weights)")
        self.config, self.device, self.is_default = config, device, is_default
        self.provenance = folder_provenance(self.path)
        self._lock = threading.Lock()
        self._model = self._processor = None
        self._sha256 = ""

    @property
    def info(self) -> CaptionerInfo:
        return CaptionerInfo(self.config.name, self.config.kind, self.is_default, self.record)

    @property
    def record(self) -> ModelRecord:
        return ModelRecord("captioner", f"transformers:{self.config.kind}", str(self.path), self._sha256,
                           self.provenance)

    def _load(self) -> None:
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(self.path, local_files_only=True)
            model = KINDS[self.config.kind]().from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelFilesError(f"captioner {self.config.name!r}: cannot load {self.path}: {e}") from None
        self._model, self._processor = model.to(self.device).eval(), processor
        weights = sorted(self.path.glob("*.safetensors"))
        self._sha256 = file_sha256(*weights) if weights else ""

    def caption(self, image: np.ndarray, prompt: str, max_new_tokens: int) -> str:
        """image uint8 (H, W, 3) RGB, any size (the processor resizes it); prompt "" or the text the caption
        continues; max_new_tokens >= 1. Returns the decoded caption (module docstring)."""
        from PIL import Image

        with self._lock:
            if self._model is None:
                self._load()
            kwargs = {"text": prompt} if prompt else {}
            inputs = self._processor(images=Image.fromarray(image), return_tensors="pt", **kwargs).to(self.device)
            with torch.no_grad():
                out = self._model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
            return self._processor.batch_decode(out, skip_special_tokens=True)[0].strip()


def load_captioners(configs: list[CaptionerConfig], base_dir: Path, device: torch.device) -> dict[str, Captioner]:
    """{name: Captioner} in config order; the default is the one marked `default`, else the first."""
    default = next((c.name for c in configs if c.default), configs[0].name if configs else "")
    return {c.name: Captioner(c, base_dir, device, c.name == default) for c in configs}
