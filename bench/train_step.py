"""Time artlora's training step against a reference loop written the way diffusers' LoRA example does it.

Same model (random weights: step time does not depend on weight values), same batch, same LoRA, same card, in
one process:
- `reference`: the diffusers `train_text_to_image_lora.py` step: VAE-encode the pixels and run the text encoder
  every step, UNet forward/backward under autocast, clip, AdamW (foreach), LR schedule. Its data loader's image
  decoding and augmentation are left out (pixels are ready on the device), which flatters the reference.
- `artlora`: `Trainer.step` itself (`artlora.stages.train.trainer`: cached latents and caption states on the
  device, fused AdamW on CUDA, LoRA weights in fp32), with the default config, then with channels-last and with
  torch.compile.
- `artlora+text_encoder`: the artlora step with LoRA on the text encoder(s) too (`--text-encoder`), which runs
  them forward and backward every step, as the reference runs them forward.
- `perceptual*`: the artlora step with the LPIPS term (VGG, random backbone weights: same cost), at full cost
  and with the cost controls (decode at half resolution, a sub-batch of 2).

    PYTHONPATH=src python bench/train_step.py --arch tiny                       # CPU, tiny model
    PYTHONPATH=src python bench/train_step.py --arch sd15 --resolution 512 --batch-sizes 1 8 --compile
    PYTHONPATH=src python bench/train_step.py --arch sdxl --batch-sizes 1 4 --no-extras   # 1024 px, bf16

SD 3.5 and Flux.1 (`sd35-medium`, `sd35-large`, `flux-dev`, `tiny-sd3`, `tiny-flux`): the artlora step only (no
reference loop here), at the real transformer's shapes with random weights, on cached 16-channel latents, T5
states (`--t5-length`, default 256 for SD 3.5, 512 for Flux) and pooled embeddings, the frozen base in bf16 on a
GPU; plus a row with gradient checkpointing. The family (`artlora.diffusion.families`) says everything else.

    PYTHONPATH=src python bench/train_step.py --arch sd35-medium --batch-sizes 1 4 --resolution 1024
    PYTHONPATH=src python bench/train_step.py --arch flux-dev --batch-sizes 1 --resolution 1024

SDXL (`sdxl`, `tiny-sdxl`): the reference encodes with the VAE and both text encoders every step (penultimate
states concatenated, the second encoder's pooled output) and builds the size/crop time ids, as diffusers'
`train_text_to_image_lora_sdxl.py` does; artlora reads cached states, pooled embeds and time ids.

Needs torch, diffusers, transformers, peft, lpips, pydantic and pyyaml only: the Trainer module imports neither
the object store nor MLflow. Writes `train-step-<arch>-<card>.json` to --out and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from diffusers.optimization import get_scheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from artlora.config import TrainConfig
from artlora.demo import tiny, tiny_transformers
from artlora.diffusion import families
from artlora.diffusion.device import default_device
from artlora.stages.train import lora
from artlora.stages.train.trainer import PRECISIONS, Trainer

# Stable Diffusion 1.5's architecture (diffusers' UNet defaults are SD 1.x's, with 1280 cross-attention).
SD15_UNET = {"sample_size": 64, "cross_attention_dim": 768}
SD15_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
}
SD15_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
}
TOKENS = 77
# SDXL base 1.0's architecture: its UNet, the same VAE layout, CLIP ViT-L and OpenCLIP ViT-bigG text encoders.
SDXL_UNET = {
    "sample_size": 128,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_VAE = {**SD15_VAE, "sample_size": 1024, "scaling_factor": 0.13025}
SDXL_TEXT_2 = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
# The transformer families' denoisers (their transformer/config.json), with the text shapes they read.
SD35_MEDIUM = {
    "sample_size": 128,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "caption_projection_dim": 1536,
    "pos_embed_max_size": 384,
    "dual_attention_layers": tuple(range(13)),
    "qk_norm": "rms_norm",
}
SD35_LARGE = {
    "sample_size": 128,
    "num_layers": 38,
    "attention_head_dim": 64,
    "num_attention_heads": 38,
    "caption_projection_dim": 2432,
    "pos_embed_max_size": 192,
    "qk_norm": "rms_norm",
}
FLUX_DEV = {"guidance_embeds": True}  # FluxTransformer2DModel's defaults are Flux.1's
# arch -> (family, transformer config or None for the tiny one, text width, pooled width, CLIP tokens, T5 tokens)
FLOW_ARCHES = {
    "tiny-sd3": ("sd3", None, 64, 64, TOKENS, 16),
    "sd35-medium": ("sd3", SD35_MEDIUM, 4096, 2048, TOKENS, 256),
    "sd35-large": ("sd3", SD35_LARGE, 4096, 2048, TOKENS, 256),
    "tiny-flux": ("flux", None, 64, 32, 0, 16),
    "flux-dev": ("flux", FLUX_DEV, 4096, 768, 0, 512),
}


@dataclass(frozen=True)
class Group:
    latents: torch.Tensor
    text: torch.Tensor
    pooled: torch.Tensor | None = None  # SDXL
    time_ids: torch.Tensor | None = None  # SDXL
    captions: tuple[str, ...] = ()  # read when the text encoders train

    def __len__(self) -> int:
        return len(self.latents)


def _to(tensor: torch.Tensor | None, target: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(target)


@dataclass(frozen=True)
class Latents:
    """What the Trainer reads from a latent_cache.LatentSet (which imports the object store)."""

    groups: tuple[Group, ...]
    empty_text: torch.Tensor
    dataset_fingerprint: str = "bench"
    empty_pooled: torch.Tensor | None = None
    architecture: str = "sd1"  # the model family's name

    def to(self, target: torch.device) -> Latents:
        groups = tuple(
            Group(g.latents.to(target), g.text.to(target), _to(g.pooled, target), _to(g.time_ids, target), g.captions)
            for g in self.groups
        )
        empty = self.empty_text.to(target)
        return Latents(groups, empty, self.dataset_fingerprint, _to(self.empty_pooled, target), self.architecture)


# -- models ---------------------------------------------------------------------------------------------


class Models:
    """Builds fresh random-weight parts of one architecture on the device (every variant gets its own UNet)."""

    def __init__(self, arch: str, resolution: int, dev: torch.device):
        self.arch, self.resolution, self.dev = arch, resolution, dev
        self._tiny = None
        self.sdxl = arch in ("sdxl", "tiny-sdxl")
        self.flow = FLOW_ARCHES.get(arch)
        self.family = families.named(self.flow[0] if self.flow else "sdxl" if self.sdxl else "sd1")
        if self.flow:  # only the transformer is needed: captions and latents are cached
            self.vae = self.text_encoder = self.text_encoder_2 = None
            self.factor = 4 if arch.startswith("tiny") else 8
            return
        self.vae, self.text_encoder, self.text_encoder_2 = self.frozen_parts()
        self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
        )

    def tiny(self):
        return tiny.build_tiny_sdxl(seed=0) if self.sdxl else tiny.build_tiny_sd(seed=0)

    def frozen_parts(self) -> tuple[AutoencoderKL, CLIPTextModel, CLIPTextModelWithProjection | None]:
        torch.manual_seed(0)
        if self.arch.startswith("tiny"):
            pipe = self.tiny()
            second = pipe.text_encoder_2.to(self.dev) if self.sdxl else None
            return pipe.vae.to(self.dev), pipe.text_encoder.to(self.dev), second
        with self.dev:
            if self.sdxl:
                text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2))
                return AutoencoderKL(**SDXL_VAE), CLIPTextModel(CLIPTextConfig(**SD15_TEXT)), text_2
            return AutoencoderKL(**SD15_VAE), CLIPTextModel(CLIPTextConfig(**SD15_TEXT)), None

    def unet(self) -> UNet2DConditionModel:
        torch.manual_seed(0)
        if self.arch.startswith("tiny"):
            return self.tiny().unet.to(self.dev)
        with self.dev:
            return UNet2DConditionModel(**(SDXL_UNET if self.sdxl else SD15_UNET))

    def text_width(self) -> int:
        """The UNet's cross-attention width: one encoder's hidden size, or SDXL's two concatenated."""
        second = self.text_encoder_2.config.hidden_size if self.text_encoder_2 is not None else 0
        return self.text_encoder.config.hidden_size + second

    def pooled_width(self) -> int:
        return self.text_encoder_2.config.projection_dim

    def transformer(self) -> torch.nn.Module:
        assert self.flow is not None
        torch.manual_seed(0)
        name, config = self.flow[0], self.flow[1]
        if config is None:
            build = tiny_transformers.build_tiny_sd3 if name == "sd3" else tiny_transformers.build_tiny_flux
            return build(0).transformer.to(self.dev)
        transformer_class = FluxTransformer2DModel if name == "flux" else SD3Transformer2DModel
        with self.dev:
            return transformer_class(**config)

    def flow_pipe(self) -> SimpleNamespace:
        build = tiny_transformers.build_tiny_flux if self.family.name == "flux" else tiny_transformers.build_tiny_sd3
        # the tiny pipelines carry the real schedulers' settings (SD 3.5: shift 3; Flux.1-dev: shift by resolution)
        return SimpleNamespace(transformer=self.transformer(), vae=None, scheduler=build(0).scheduler)

    def pipe(self, text_encoders: bool = False) -> SimpleNamespace:
        """The parts a Trainer takes; with `text_encoders`, fresh ones (a trained adapter is attached to them) and
        the byte-level tokenizer of the tiny model (token values do not change the step's cost)."""
        pipe = SimpleNamespace(unet=self.unet(), vae=self.vae, scheduler=self.scheduler)
        if text_encoders:
            _, pipe.text_encoder, second = self.frozen_parts()
            pipe.tokenizer = tiny.byte_tokenizer()
            if second is not None:
                pipe.text_encoder_2, pipe.tokenizer_2 = second, tiny.byte_tokenizer()
        return pipe


# -- the two loops --------------------------------------------------------------------------------------


def reference_step(models: Models, config: TrainConfig, batch: int):
    """One step of the diffusers LoRA example, as a closure over fixed pixels and token ids."""
    dev, dtype = models.dev, PRECISIONS[config.mixed_precision] if models.dev.type == "cuda" else None
    unet = models.unet()
    torch.manual_seed(config.seed)
    params = lora.add_lora(unet, config)
    frozen = dtype or torch.float32
    vae, text_encoder = models.vae.to(frozen), models.text_encoder.to(frozen)
    text_encoder_2 = models.text_encoder_2.to(frozen) if models.sdxl else None
    for param in unet.parameters():
        if not param.requires_grad:
            param.data = param.data.to(frozen)
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = get_scheduler("constant", optimizer)
    side = models.resolution
    pixels = torch.rand(batch, 3, side, side, device=dev, dtype=frozen) * 2 - 1
    ids = torch.randint(0, text_encoder.config.vocab_size, (batch, TOKENS), device=dev)

    def encode_text() -> tuple[torch.Tensor, dict | None]:
        if text_encoder_2 is None:
            return text_encoder(ids, return_dict=False)[0], None
        # As train_text_to_image_lora_sdxl.py's encode_prompt: both penultimate states, the second's pooled output.
        first = text_encoder(ids, output_hidden_states=True)
        second = text_encoder_2(ids, output_hidden_states=True)
        text = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        # original size, crop top-left, target size per image, built every step as the example does
        time_ids = torch.tensor([[side, side, 0, 0, side, side]] * batch, device=dev, dtype=frozen)
        return text, {"text_embeds": second.text_embeds, "time_ids": time_ids}

    def step() -> None:
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            text, added = encode_text()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (batch,), device=dev)
        noisy = models.scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            output = unet(noisy, timesteps, text, added_cond_kwargs=added, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(output.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def artlora_step(models: Models, config: TrainConfig, batch: int):
    """`Trainer.step` on cached latents: four batches' worth of views in one bucket."""
    if models.flow:
        return flow_step(models, config, batch)
    views, side = 4 * batch, models.resolution // models.factor
    width = models.text_width()
    captions = tuple(f"a painting in the style of artlora, study {i}" for i in range(views))
    group = Group(torch.randn(views, 4, side, side), torch.randn(views, TOKENS, width), captions=captions)
    data = Latents((group,), torch.zeros(TOKENS, width))
    if models.sdxl:
        pooled, ids = torch.randn(views, models.pooled_width()), torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]])
        group = Group(group.latents, group.text, pooled, ids.expand(views, 6).clone(), captions)
        empty_pooled = torch.zeros(models.pooled_width())
        data = Latents((group,), data.empty_text, empty_pooled=empty_pooled, architecture="sdxl")
    pipe = models.pipe(text_encoders=config.train_text_encoder)
    trainer = Trainer(config.model_copy(update={"batch_size": batch}), data, pipe)
    counter = iter(range(10**9))

    def step() -> dict[str, torch.Tensor]:
        return trainer.step(next(counter))

    step.trainer = trainer  # for checks on where and how it trains
    return step


def flow_step(models: Models, config: TrainConfig, batch: int):
    """`Trainer.step` of a transformer family on cached 16-channel latents, T5 states and pooled embeddings."""
    assert models.flow is not None
    _, _, width, pooled, clip_tokens, t5_tokens = models.flow
    views, side, tokens = 4 * batch, models.resolution // models.factor, clip_tokens + t5_tokens
    group = Group(torch.randn(views, 16, side, side), torch.randn(views, tokens, width), torch.randn(views, pooled))
    data = Latents(
        (group,), torch.zeros(tokens, width), empty_pooled=torch.zeros(pooled), architecture=models.family.name
    )
    trainer = Trainer(config.model_copy(update={"batch_size": batch}), data, models.flow_pipe())
    counter = iter(range(10**9))

    def step() -> dict[str, torch.Tensor]:
        return trainer.step(next(counter))

    step.trainer = trainer
    return step


# -- timing ---------------------------------------------------------------------------------------------


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def measure(name: str, make_step, dev: torch.device, batch: int, warmup: int, steps: int) -> dict:
    gc.collect()  # the previous variant's UNet and optimizer
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        step = make_step()
        began = time.perf_counter()
        step()  # the first step holds one-off work (torch.compile, cuDNN autotuning): reported apart
        sync(dev)
        first = time.perf_counter() - began
        for _ in range(warmup):
            step()
        sync(dev)
        began = time.perf_counter()
        for _ in range(steps):
            step()
        sync(dev)
        seconds = (time.perf_counter() - began) / steps
    except Exception as err:  # out of memory, a compile failure: recorded, and the other variants still run
        row = {"variant": name, "batch": batch, "error": f"{type(err).__name__}: {str(err)[:300]}"}
        print(json.dumps(row), flush=True)
        return row
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    row = {"variant": name, "batch": batch, "step_s": seconds, "images_per_s": batch / seconds}
    row.update({"first_step_s": first, "peak_gib": peak})
    print(json.dumps(row), flush=True)
    return row


def variants(args, models: Models, base: TrainConfig) -> list[tuple[str, int, object]]:
    """(name, batch, step factory) of every measurement, in the order they run."""
    channels_last = base.model_copy(update={"channels_last": True})
    perceptual = base.model_copy(
        update={"perceptual_weight": 0.1, "perceptual_net": "vgg", "perceptual_backbone": "random"}
    )
    cheap = perceptual.model_copy(update={"perceptual_scale": 0.5, "perceptual_batch": 2})
    out = []
    if models.flow:  # no reference loop for the transformer families; checkpointing is their memory option
        checkpointed = base.model_copy(update={"gradient_checkpointing": True})
        for batch in args.batch_sizes:
            out.append(("artlora", batch, lambda b=batch: artlora_step(models, base, b)))
            out.append(("artlora+checkpointing", batch, lambda b=batch: artlora_step(models, checkpointed, b)))
        return out
    for batch in args.batch_sizes:
        out.append(("reference", batch, lambda b=batch: reference_step(models, base, b)))
        out.append(("artlora", batch, lambda b=batch: artlora_step(models, base, b)))
    largest = max(args.batch_sizes)
    if args.text_encoder:
        text = base.model_copy(update={"train_text_encoder": True})
        out.append(("artlora+text_encoder", largest, lambda: artlora_step(models, text, largest)))
    if args.no_extras:
        return out
    out.append(("artlora+channels_last", largest, lambda: artlora_step(models, channels_last, largest)))
    batch = args.perceptual_batch
    out.append(("artlora@perceptual", batch, lambda: artlora_step(models, base, batch)))
    out.append(("perceptual_full", batch, lambda: artlora_step(models, perceptual, batch)))
    out.append(("perceptual_half_res_sub2", batch, lambda: artlora_step(models, cheap, batch)))
    if args.compile:  # last: compiling takes the longest, and everything before it is already written
        compiled = channels_last.model_copy(update={"torch_compile": True})
        out.append(("artlora+channels_last+compile", largest, lambda: artlora_step(models, compiled, largest)))
    return out


def summarise(rows: list[dict]) -> dict[str, float]:
    """Ratios: artlora over the reference (images/s) per batch size, and the perceptual term's cost."""
    speed = {(r["variant"], r["batch"]): r["images_per_s"] for r in rows if "images_per_s" in r}
    ratios = {}
    for (name, batch), value in speed.items():
        if name.startswith("artlora") and ("reference", batch) in speed:
            ratios[f"{name}_vs_reference_b{batch}"] = value / speed[("reference", batch)]
        if name.startswith("perceptual") and ("artlora@perceptual", batch) in speed:
            ratios[f"{name}_step_cost_vs_plain_b{batch}"] = speed[("artlora@perceptual", batch)] / value
    return ratios


def card_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "sd15", "tiny-sdxl", "sdxl", *FLOW_ARCHES], default="tiny")
    parser.add_argument("--resolution", type=int, default=None, help="pixels (default: 64 tiny, 512 sd15, 1024 sdxl)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--perceptual-batch", type=int, default=4)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time the step with torch.compile")
    parser.add_argument(
        "--no-extras", action="store_true", help="only reference vs artlora (no channels-last or perceptual rows)"
    )
    parser.add_argument(
        "--text-encoder", action="store_true", help="also time the step with LoRA on the text encoder(s)"
    )
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    default = {"tiny": 64, "tiny-sdxl": 64, "sd15": 512, "sdxl": 1024}.get(args.arch)
    default = default or (64 if args.arch.startswith("tiny") else 1024)
    args.resolution = args.resolution or default
    return args


def print_table(result: dict, out: Path) -> None:
    print(f"\n{result['card']}, {result['arch']} at {result['resolution']} px, torch {result['torch']}")
    for row in result["rows"]:
        label = f"{row['variant']:30} b{row['batch']:<3}"
        if "error" in row:
            print(label, row["error"])
        else:
            print(label, f"{row['step_s'] * 1e3:9.1f} ms {row['images_per_s']:8.2f} img/s")
    for name, value in result["ratios"].items():
        print(f"{name:52} {value:6.2f}")
    print(f"written to {out}")


def main() -> None:
    args, dev = arguments(), default_device()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    models = Models(args.arch, args.resolution, dev)
    base = TrainConfig(storage_root="s3://bench", base_model="random-" + args.arch, rank=args.rank, alpha=args.rank)
    result = {
        "card": card_name(dev),
        "arch": args.arch,
        "resolution": args.resolution,
        "torch": torch.__version__,
        "precision": base.mixed_precision if dev.type == "cuda" else "fp32",
        "family": models.family.name,
        "lora": {"rank": args.rank, "targets": list(lora.expand_targets(base.target_modules, models.family))},
        "warmup_steps": args.warmup,
        "steps_timed": args.steps,
        "rows": [],
    }
    slug = re.sub(r"[^a-z0-9]+", "-", result["card"].lower()).strip("-")
    out = Path(args.out) / f"train-step-{args.arch}-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, batch, make in variants(args, models, base):
        result["rows"].append(measure(name, make, dev, batch, args.warmup, args.steps))
        result["ratios"] = summarise(result["rows"])
        out.write_text(json.dumps(result, indent=2) + "\n")  # after every row: a timeout keeps what was done
    print_table(result, out)


if __name__ == "__main__":
    main()
