"""Tiny, random-initialised guidance models written exactly as the real ones lie on disk (tests only: their
outputs mean nothing).

`write_tiny_models(root)` writes, deterministically (fixed seeds), and returns `root/guidance.yaml`:

- `sd15-tiny/`: a diffusers Stable Diffusion 1.5 folder as `StableDiffusionPipeline.save_pretrained` leaves it
  with the safety checker and feature extractor removed: `model_index.json` (those two components null),
  `unet/` (UNet2DConditionModel, SD1.5 block layout shrunk: blocks (32, 64), one layer per block, cross-attention
  dim 32), `vae/` (AutoencoderKL with four blocks, so the latent scale factor is 8 as in SD; 4 latent channels,
  scaling factor 0.18215), `text_encoder/` (CLIPTextModel, hidden 32, 2 layers, 77 positions),
  `tokenizer/` (CLIPTokenizer files `vocab.json`, `merges.txt`, `tokenizer_config.json`,
  `special_tokens_map.json`: a byte-level BPE vocabulary built here from a small corpus, with CLIP's layout:
  256 byte symbols, the same with `</w>`, the learned merges, then `<|startoftext|>` and `<|endoftext|>`),
  `scheduler/scheduler_config.json` (PNDMScheduler with SD1.5's schedule: scaled_linear betas
  0.00085..0.012, 1000 steps, epsilon prediction). Weights are safetensors. Native resolution 64 px (UNet
  sample_size 8).
- `controlnet-landmarks-tiny/`, `controlnet-normal-tiny/`: `ControlNetModel.save_pretrained` folders made with
  `ControlNetModel.from_unet` whose zero-initialised convolutions (conditioning-embedding output, down-block and
  mid-block projections) are given small random weights so that the control changes the UNet's output.
- `ip-adapter-faceid-tiny/ip-adapter-faceid_sd15.bin`: a torch-saved dict in the h94/IP-Adapter-FaceID layout:
  `{"image_proj": {proj.0.*, proj.2.*, norm.*}, "ip_adapter": {...}}`. image_proj is the FaceID MLP
  (512-d ArcFace embedding -> 1024 -> 4 tokens x 32, LayerNorm). ip_adapter numbers the UNet's attention
  processors in `unet.attn_processors` order (0, 1, 2, ...): every processor has the FaceID LoRA
  (`{i}.to_q_lora.down/up.weight`, to_k, to_v, to_out; rank 4 here, 128 in the real file) and every
  cross-attention processor (the odd numbers) has `{i}.to_k_ip.weight` / `{i}.to_v_ip.weight`.
- `expression-adapter-tiny/expression_adapter.safetensors`: an expression adapter in HeadForge's format
  (services/guidance/backbones/expression_adapter.py): the pooled 32-d tiny text-encoder embedding -> 64 -> 2
  tokens x 32, LayerNorm, and to_k_ip / to_v_ip for the cross-attention processors 1, 3, 5, 7.
- `lora-normal-tiny/pytorch_lora_weights.safetensors`: a UNet LoRA in the diffusers format written by the
  diffusers training scripts (`unet.<module>.to_q.lora.down.weight` / `.lora.up.weight` for to_q, to_k, to_v
  and to_out.0 of every attention block), rank 4, non-zero.
- `lora-albedo-kohya-tiny/albedo_lora.safetensors`: a UNet LoRA in the kohya-ss (sd-scripts) format, as ID-to-3D's
  style LoRAs would be shared: `lora_unet_<module path with _>_<proj>.lora_down.weight` / `.lora_up.weight` /
  `.alpha` for to_q, to_k, to_v and to_out_0 of every attention block, rank 4 on self-attention (attn1) and 8 on
  cross-attention (attn2): the paper's 16 / 32, shrunk; alpha = rank. Not in guidance.yaml's default backbone
  (tests that need it add it, with output_kind albedo).
- `blip2-tiny/`: `Blip2ForConditionalGeneration.save_pretrained` + `Blip2Processor.save_pretrained` (the layout of
  Salesforce/blip2-opt-2.7b as transformers 5 writes it: config.json, generation_config.json, model.safetensors,
  processor_config.json (image processor: 32 x 32 px, BLIP mean/std), tokenizer.json, tokenizer_config.json): a
  ViT of 1 layer, hidden 32, 8 px patches; a Q-Former of 1 layer, hidden 32, 4 query tokens; an OPT language
  model of 2 layers, hidden 32; a byte-level BPE tokenizer (GPT2Tokenizer, OPT's specials `</s>` bos/eos,
  `<pad>`, `<unk>`, plus BLIP-2's `<image>` token) of a few hundred tokens learned here from _CORPUS.
- `blip-tiny/`: `BlipForConditionalGeneration` + `BlipProcessor` likewise (Salesforce/blip-image-captioning-large
  layout): a 1-layer ViT and a 2-layer BERT text decoder, hidden 32; a WordPiece BertTokenizer (the corpus's
  words, letters and `##` letters, a few hundred tokens) with BLIP's `[DEC]` bos token.
- `guidance.yaml`: a `backbones:` list describing the above (paths relative to the file) and a `captioners:`
  list (blip2-tiny the default, blip-tiny).

Every model folder above also holds the random-weights marker file (services.core.models.mark_random_weights):
the loaders report its models with provenance "random_weights".
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
import yaml

from services.core.models import mark_random_weights
from services.guidance.backbones.expression_adapter import (attention_processor_dims, expression_state,
                                                            write_expression_adapter)
from services.guidance.schedule import SD_SCHEDULE

CROSS_ATTENTION_DIM = 32
ID_EMBEDDING_DIM = 512
FACEID_TOKENS = 4
FACEID_MULT = 2
EXPRESSION_TOKENS = 2
ADAPTER_RANK = 4
LORA_RANK = 4

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
BPE_MERGES = 300

# The text the BPE merges are learned from: words a portrait prompt is made of.
_CORPUS = """
a photo of a person, portrait of a man, portrait of a woman, a close up photo of a face, a head,
a high quality photo, a detailed 3d render of a human head, front view, side view, back view, overhead view,
realistic skin, hair, eyes, nose, mouth, ears, beard, smiling, neutral expression, studio lighting,
a normal map of a face, a depth map, albedo, texture, unlit, diffuse colour, color, best quality,
blurry, low quality, bad anatomy, deformed, ugly, cartoon, painting, old, young, child, elderly,
the the the a a a of of of photo photo portrait portrait face face head head person person
"""


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes, in CLIP's vocabulary order: the bytes that
    are printable Latin-1 characters map to themselves (listed first), the others to chr(256 + n) in byte
    order (listed after)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _byte_map() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def build_bpe(corpus: str = _CORPUS, num_merges: int = BPE_MERGES) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary learned greedily from `corpus`: (vocab token -> id, merges)."""
    bmap = _byte_map()
    words = Counter()
    for raw in corpus.lower().replace(",", " , ").replace(".", " . ").split():
        symbols = [bmap[b] for b in raw.encode("utf-8")]
        symbols[-1] += "</w>"
        words[tuple(symbols)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best_count = max(pairs.values())
        if best_count < 2:
            break
        best = min(p for p, c in pairs.items() if c == best_count)   # deterministic tie-break
        merges.append(best)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    tokens = _byte_symbols()
    tokens = tokens + [t + "</w>" for t in tokens] + [a + b for a, b in merges] + [BOS_TOKEN, EOS_TOKEN]
    return {t: i for i, t in enumerate(tokens)}, merges


def _special(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


def write_tokenizer(folder: Path) -> dict[str, int]:
    """The four files of SD1.5's tokenizer/ folder; returns the vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_bpe()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": _special(BOS_TOKEN), "eos_token": _special(EOS_TOKEN), "pad_token": EOS_TOKEN,
        "unk_token": _special(EOS_TOKEN)}, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": _special(BOS_TOKEN), "do_lower_case": True,
        "eos_token": _special(EOS_TOKEN), "errors": "replace", "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": EOS_TOKEN, "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer", "unk_token": _special(EOS_TOKEN)}, indent=2))
    return vocab


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8, norm_num_groups=8)


def _tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=64, scaling_factor=0.18215)


def _tiny_text_encoder(vocab: dict[str, int]):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(2)
    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=CROSS_ATTENTION_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MODEL_MAX_LENGTH, projection_dim=CROSS_ATTENTION_DIM,
        hidden_act="quick_gelu", bos_token_id=vocab[BOS_TOKEN], eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN])
    return CLIPTextModel(config).eval()


def _scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(**SD_SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
                         prediction_type="epsilon")


def _write_sd_folder(folder: Path):
    import diffusers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(folder / "tokenizer")
    unet = _tiny_unet()
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    _tiny_vae().save_pretrained(folder / "vae", safe_serialization=True)
    _tiny_text_encoder(vocab).save_pretrained(folder / "text_encoder", safe_serialization=True)
    _scheduler().save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }, indent=2))
    return unet


def _write_controlnet(unet, folder: Path, seed: int):
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        zero_init = [controlnet.controlnet_cond_embedding.conv_out, *controlnet.controlnet_down_blocks,
                     controlnet.controlnet_mid_block]
        for module in zero_init:
            std = 0.2 if module is controlnet.controlnet_cond_embedding.conv_out else 0.05
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * std)
            module.bias.copy_(torch.randn(module.bias.shape, generator=g) * std * 0.1)
    controlnet.save_pretrained(folder, safe_serialization=True)


def faceid_state(unet, *, embedding_dim: int = ID_EMBEDDING_DIM, tokens: int = FACEID_TOKENS,
                 mult: int = FACEID_MULT, rank: int = ADAPTER_RANK, seed: int = 4) -> dict:
    """A random IP-Adapter FaceID state dict in h94/IP-Adapter-FaceID's sd15 .bin layout, sized for `unet`
    ({"image_proj": ..., "ip_adapter": ...}; the real file: 512-d embeddings, 4 tokens, LoRA rank 128)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std):
        return torch.randn(shape, generator=g) * std

    d, hidden = unet.config.cross_attention_dim, embedding_dim * mult
    image_proj = {"proj.0.weight": rnd(hidden, embedding_dim, std=embedding_dim ** -0.5),
                  "proj.0.bias": rnd(hidden, std=0.01),
                  "proj.2.weight": rnd(d * tokens, hidden, std=hidden ** -0.5), "proj.2.bias": rnd(d * tokens, std=0.01),
                  "norm.weight": 1.0 + rnd(d, std=0.05), "norm.bias": rnd(d, std=0.05)}
    ip_adapter = {}
    for i, (_, hid, cross) in enumerate(attention_processor_dims(unet)):
        kv_in = cross if cross is not None else hid
        for proj, fan_in in (("to_q", hid), ("to_k", kv_in), ("to_v", kv_in), ("to_out", hid)):
            ip_adapter[f"{i}.{proj}_lora.down.weight"] = rnd(rank, fan_in, std=fan_in ** -0.5)
            ip_adapter[f"{i}.{proj}_lora.up.weight"] = rnd(hid, rank, std=0.02)
        if cross is not None:
            ip_adapter[f"{i}.to_k_ip.weight"] = rnd(hid, cross, std=cross ** -0.5)
            ip_adapter[f"{i}.to_v_ip.weight"] = rnd(hid, cross, std=cross ** -0.5)
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def _write_faceid(unet, path: Path, seed: int = 4):
    """The h94/IP-Adapter-FaceID sd15 .bin layout (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(faceid_state(unet, seed=seed), path)


def _write_lora(unet, path: Path, seed: int = 5):
    """diffusers-format UNet LoRA (`unet.<attention module>.<proj>.lora.down/up.weight`)."""
    from diffusers.models.attention_processor import Attention
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            linear = module.get_submodule(proj)
            fan_in, fan_out = linear.in_features, linear.out_features
            down = torch.randn(LORA_RANK, fan_in, generator=g) * fan_in ** -0.5
            tensors[f"unet.{name}.{proj}.lora.down.weight"] = down
            tensors[f"unet.{name}.{proj}.lora.up.weight"] = torch.randn(fan_out, LORA_RANK, generator=g) * 0.05
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _write_kohya_lora(unet, path: Path, seed: int = 6, ranks: tuple[int, int] = (4, 8)):
    """kohya-ss format UNet LoRA (module docstring): ranks (self-attention, cross-attention)."""
    from diffusers.models.attention_processor import Attention
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        rank = ranks[1] if name.endswith("attn2") else ranks[0]
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            linear = module.get_submodule(proj)
            key = "lora_unet_" + f"{name}.{proj}".replace(".", "_")
            tensors[f"{key}.lora_down.weight"] = torch.randn(rank, linear.in_features, generator=g) * linear.in_features ** -0.5
            tensors[f"{key}.lora_up.weight"] = torch.randn(linear.out_features, rank, generator=g) * 0.05
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


CAPTION_IMAGE_SIZE = 32
CAPTION_HIDDEN = 32
BLIP2_QUERY_TOKENS = 4
CAPTION_VOCAB = 400


def _caption_corpus() -> list[str]:
    return [line.strip() for line in _CORPUS.strip().splitlines()] * 4


def _tiny_vision() -> dict:
    return dict(hidden_size=CAPTION_HIDDEN, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                image_size=CAPTION_IMAGE_SIZE, patch_size=8)


def _caption_image_processor():
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": CAPTION_IMAGE_SIZE, "width": CAPTION_IMAGE_SIZE})


def _opt_tokenizer():
    """An OPT-style byte-level BPE GPT2Tokenizer with BLIP-2's `<image>` token (last id)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_caption_corpus(), trainers.BpeTrainer(
        vocab_size=CAPTION_VOCAB, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = GPT2TokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                             unk_token="<unk>", add_bos_token=True)
    fast.add_tokens(["<image>"], special_tokens=True)
    return fast


def _bert_tokenizer():
    """A WordPiece BertTokenizer (lower case) with BLIP's `[DEC]` bos token."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # the vocabulary is built, not trained (the WordPiece trainer breaks ties in hash order): the corpus's words,
    # every letter and digit alone and as a "##" continuation, and punctuation, sorted
    words = {w for w in _CORPUS.lower().replace(",", " ").replace(".", " ").split()}
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    tokens = specials + sorted(words | set(chars) | {"##" + c for c in chars} | set(",.!?'-"))
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]")
    fast.add_special_tokens({"bos_token": "[DEC]"})
    return fast


def _write_blip2(folder: Path, seed: int = 20) -> None:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, OPTConfig

    tokenizer = _opt_tokenizer()
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=CAPTION_HIDDEN, num_hidden_layers=2, ffn_dim=64,
                     num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=CAPTION_HIDDEN,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id)
    config = Blip2Config(
        vision_config=_tiny_vision(),
        qformer_config=dict(hidden_size=CAPTION_HIDDEN, num_hidden_layers=1, num_attention_heads=4,
                            intermediate_size=64, encoder_hidden_size=CAPTION_HIDDEN, vocab_size=len(tokenizer)),
        text_config=text.to_dict(), num_query_tokens=BLIP2_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    Blip2ForConditionalGeneration(config).eval().save_pretrained(folder, safe_serialization=True)
    Blip2Processor(image_processor=_caption_image_processor(), tokenizer=tokenizer,
                   num_query_tokens=BLIP2_QUERY_TOKENS).save_pretrained(folder)


def _write_blip(folder: Path, seed: int = 21) -> None:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor

    tokenizer = _bert_tokenizer()
    config = BlipConfig(
        vision_config=_tiny_vision(), projection_dim=CAPTION_HIDDEN,
        text_config=dict(vocab_size=len(tokenizer), hidden_size=CAPTION_HIDDEN, encoder_hidden_size=CAPTION_HIDDEN,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.sep_token_id, sep_token_id=tokenizer.sep_token_id))
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder, safe_serialization=True)
    BlipProcessor(image_processor=_caption_image_processor(), tokenizer=tokenizer).save_pretrained(folder)


def guidance_config() -> dict:
    """The `backbones` and `captioners` lists describing the tiny models (paths relative to the YAML file)."""
    return {"captioners": [{"name": "blip2-tiny", "kind": "blip2", "path": "blip2-tiny", "default": True},
                           {"name": "blip-tiny", "kind": "blip", "path": "blip-tiny"}],
            "backbones": [{
        "name": "sd15-tiny",
        "backend": "diffusers",
        "family": "sd15",
        "path": "sd15-tiny",
        "default": True,
        "controlnets": [
            {"name": "landmarks", "kind": "landmarks", "path": "controlnet-landmarks-tiny"},
            {"name": "normal", "kind": "normal", "path": "controlnet-normal-tiny"},
        ],
        "identity_adapters": [
            # The real FaceID weights only exist as a torch pickle: loading them needs the explicit flag.
            {"name": "faceid", "path": "ip-adapter-faceid-tiny", "weight_name": "ip-adapter-faceid_sd15.bin",
             "allow_pickle": True},
        ],
        "expression_adapters": [
            {"name": "expression", "path": "expression-adapter-tiny", "weight_name": "expression_adapter.safetensors"},
        ],
        "loras": [
            {"name": "normal", "path": "lora-normal-tiny", "weight_name": "pytorch_lora_weights.safetensors",
             "output_kind": "normal"},
        ],
    }]}


def write_tiny_models(root: Path) -> Path:
    """Write every tiny model under `root` (see the module docstring) and return `root/guidance.yaml`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    unet = _write_sd_folder(root / "sd15-tiny")
    _write_controlnet(unet, root / "controlnet-landmarks-tiny", seed=10)
    _write_controlnet(unet, root / "controlnet-normal-tiny", seed=11)
    _write_faceid(unet, root / "ip-adapter-faceid-tiny" / "ip-adapter-faceid_sd15.bin")
    write_expression_adapter(root / "expression-adapter-tiny" / "expression_adapter.safetensors",
                             expression_state(unet, CROSS_ATTENTION_DIM, tokens=EXPRESSION_TOKENS), EXPRESSION_TOKENS)
    _write_lora(unet, root / "lora-normal-tiny" / "pytorch_lora_weights.safetensors")
    _write_kohya_lora(unet, root / "lora-albedo-kohya-tiny" / "albedo_lora.safetensors")
    _write_blip2(root / "blip2-tiny")
    _write_blip(root / "blip-tiny")
    for folder in ("sd15-tiny", "controlnet-landmarks-tiny", "controlnet-normal-tiny", "ip-adapter-faceid-tiny",
                   "expression-adapter-tiny", "lora-normal-tiny", "lora-albedo-kohya-tiny", "blip2-tiny", "blip-tiny"):
        mark_random_weights(root / folder, "services.guidance.tiny_models.write_tiny_models "
                                           "(headforge models make-tiny)")
    path = root / "guidance.yaml"
    path.write_text(yaml.safe_dump(guidance_config(), sort_keys=False))
    return path
