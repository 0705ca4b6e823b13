"""The train stage's settings: the adapter, the objective, optimisation, checkpoints and validation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from artlora.config.base import BaseModelRef, Experiment, Seed, StageConfig, StorageRoot
from artlora.config.evaluate import EvaluateConfig

CHAMPION_SHORTHAND = "champion"  # train.init_from in a pipeline config: the model's champion, when there is one
_EVALUATE = EvaluateConfig.model_fields  # the gallery's defaults are the evaluation's
# The gallery's settings: what it paints while training, not what is trained (left out of the run's key).
GALLERY_FIELDS = frozenset(
    {"sample_every", "sample_prompts", "sample_seed", "sample_resolution", "sample_steps", "sample_guidance"}
)
# Settings added after runs were made: left out of the resolved config while at their defaults (LeftOutAtDefault),
# so the run keys and config digests of before, and the compiled pipeline, stay what they were until one is set.
ADDED_LATER = frozenset(
    {
        *("ema_decay", "ema_warmup", "timestep_bias", "timestep_bias_strength", "loss", "huber_delta"),
        *("adapter", "lokr_factor", "lokr_decompose_both"),
        *("preservation_weight", "preservation_prompts", "preservation_every"),
        "init_from",
    }
)


class TrainConfig(StageConfig):
    left_out_at_default = ADDED_LATER

    cache_uri: str | None = Field(None, description="latent cache index (augment's output)")
    storage_root: str = StorageRoot
    base_model: str = BaseModelRef
    experiment: str = Experiment
    seed: int = Seed
    # -- the adapter
    rank: int = Field(8, ge=1, le=256, description="LoRA rank")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA input, in [0, 1)")
    target_modules: tuple[str, ...] = Field(
        ("attention",),
        min_length=1,
        description="denoiser layers that get LoRA: the model family's groups (SD 1.x/2.x, SDXL UNets: "
        "'attention' (to_q, to_k, to_v, to_out.0), 'feed_forward' (ff.net.0.proj, ff.net.2), 'convolutions' "
        "(ResNet conv1, conv2, conv_shortcut and the down/up-sampler convs); SD 3.5 and Flux.1 transformers: "
        "'attention' (image stream), 'context' (text stream: add_q/k/v_proj, to_add_out), 'feed_forward' (both "
        "streams), 'modulation' (adaLN linears)), and/or module names matched by suffix as peft does",
    )
    use_dora: bool = Field(False, description="DoRA: a trained magnitude per output channel besides the LoRA update")
    # LyCORIS adapters (peft's LoKr and LoHa): rank and alpha keep their meaning (the update is scaled by alpha / rank)
    adapter: Literal["lora", "lokr", "loha"] = Field(
        "lora",
        description="the adapter's form: 'lora' (low-rank B @ A), 'lokr' (LyCORIS LoKr: Kronecker product of two "
        "small factors, the larger one low-rank when rank is under half its side), 'loha' (LyCORIS LoHa: Hadamard "
        "product of two rank-`rank` products); the UNet families' single file is in the LyCORIS layout A1111 and "
        "ComfyUI read",
    )
    lokr_factor: int = Field(
        -1,
        ge=-1,
        le=1024,
        description="LoKr only: the side of the Kronecker product's small factor, where it divides the layer's "
        "width (else the divisor nearest the square root up to it; kohya/LyCORIS `factor`); -1 = as square as "
        "possible",
    )
    lokr_decompose_both: bool = Field(
        False,
        description="LoKr only: the first factor low-rank too (where rank is under half its side)",
    )
    train_text_encoder: bool = Field(
        False,
        description="LoRA also on the text encoder(s)' attention (q/k/v/out projections, same rank and alpha); "
        "caption states are then computed every step instead of read from the cache (slower, more memory)",
    )
    text_encoder_learning_rate: float | None = Field(
        None, gt=0, le=1.0, description="peak learning rate of the text-encoder LoRA; null = learning_rate"
    )
    # -- warm start (the adapter's first weights)
    init_from: str | None = Field(
        None,
        min_length=1,
        description="start from a trained adapter instead of from zero: a registered version (models:/NAME@ALIAS, "
        "models:/NAME/VERSION; its files are checked against the digests registered with it), an adapter folder "
        "(s3:// or local) written by the train stage, or, in a pipeline config, `champion`: models:/<model_name>"
        "@champion, looked up when the run starts. Same base model, rank, alpha, target modules, DoRA and "
        "text-encoder setting as this run; the optimizer and LR schedule start fresh; null starts from zero",
    )
    # -- the objective
    min_snr_gamma: float | None = Field(
        None,
        gt=0,
        description="min-SNR-gamma loss weighting (5 is usual; per-sample weight min(SNR, gamma)/SNR); "
        "null turns it off",
    )
    noise_offset: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="scale of a per-channel constant added to the noise (0.05-0.1 is usual); "
        "lets the model learn very dark and very bright images; 0 turns it off",
    )
    caption_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="probability, in [0, 1), that a view trains with the empty caption "
        "(keeps classifier-free guidance working); 0 turns it off",
    )
    timestep_density: Literal["logit_normal", "mode", "uniform"] = Field(
        "logit_normal",
        description="SD 3.5 and Flux.1 (flow matching): the density training timesteps are drawn from before the "
        "base's shift (SD3 paper: logit-normal; 'mode' with mode_scale; uniform). UNet families draw uniformly",
    )
    logit_mean: float = Field(0.0, ge=-5.0, le=5.0, description="mean of the logit-normal timestep density, in [-5, 5]")
    logit_std: float = Field(1.0, gt=0.0, le=5.0, description="std of the logit-normal timestep density, in (0, 5]")
    mode_scale: float = Field(
        1.29, ge=-1.0, le=2.0, description="scale of the 'mode' timestep density, in [-1, 2] (SD3 paper: 1.29)"
    )
    loss_weighting: Literal["none", "sigma_sqrt", "cosmap"] = Field(
        "none",
        description="SD 3.5 and Flux.1: per-sample loss weights over sigma (diffusers' "
        "compute_loss_weighting_for_sd3); 'none' weights all alike. UNet families use min_snr_gamma instead",
    )
    perceptual_weight: float = Field(0.0, ge=0.0, description="weight of the LPIPS term; 0 turns it off")
    perceptual_net: Literal["vgg", "alex", "squeeze"] = Field("vgg", description="LPIPS backbone")
    perceptual_backbone: Literal["imagenet", "random"] = Field(
        "imagenet", description="'imagenet' downloads torchvision weights; 'random' is for offline tests"
    )
    perceptual_every: int = Field(1, ge=1, le=1_000_000, description="apply the LPIPS term every k-th step (cost / k)")
    perceptual_max_timestep: int = Field(
        1000,
        ge=1,
        description="LPIPS only on samples whose timestep is below this (x0 predicted from heavy noise "
        "is a blur); 1000 = every timestep of SD's schedule",
    )
    perceptual_batch: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="at most this many samples of a step get the LPIPS term; null = all that qualify",
    )
    perceptual_scale: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="side of the compared images as a share of the training resolution, in "
        "(0, 1]: latents are resized before the VAE decode, so 0.5 makes decode and LPIPS about 4x cheaper",
    )
    # -- the adapter's EMA, the timestep bias and the Huber loss: off at their defaults, and then left out of the
    # resolved config (ADDED_LATER, above), so the runs and the compiled pipeline of before keep their keys
    ema_decay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="EMA of the adapter's weights, in [0, 1) (0.999 is usual; 0 turns it off): each step "
        "ema = decay x ema + (1 - decay) x weights; the EMA weights are then what validation, the gallery and the "
        "evaluation measure and what the adapter files hold; the checkpoints keep both",
    )
    ema_warmup: bool = Field(
        True,
        description="with ema_decay: the decay ramps up as (1 + step) / (10 + step) until it reaches ema_decay "
        "(diffusers' EMAModel), so the first steps' weights do not dominate a short run; false: ema_decay from "
        "the first step",
    )
    timestep_bias: Literal["none", "high_noise", "low_noise"] = Field(
        "none",
        description="bias the training timesteps toward high noise (composition, palette, large forms: where a "
        "style is decided) or low noise (texture, fine detail); every family, on top of its own draw (UNet: "
        "uniform t; flow: timestep_density before the shift); 'none' draws as before",
    )
    timestep_bias_strength: float = Field(
        3.0,
        ge=1.0,
        le=10.0,
        description="exponent s of the bias, in [1, 10]: high_noise maps the draw u in (0, 1) to 1 - (1 - u)^s, "
        "low_noise to u^s (a uniform draw's mean goes from 0.5 to s / (s + 1) or 1 / (s + 1); 3 is the cubic "
        "draw of ai-toolkit and the T2I-Adapter paper; 1 is no bias)",
    )
    loss: Literal["mse", "huber"] = Field(
        "mse",
        description="the per-element error: 'mse' squared error; 'huber' the pseudo-Huber error "
        "2 delta (sqrt(e^2 + delta^2) - delta) (kohya sd-scripts, SimpleTuner): e^2 for errors well below "
        "huber_delta, linear above, so outlier pixels and noisy timesteps pull less",
    )
    huber_delta: float = Field(
        0.1,
        gt=0.0,
        le=10.0,
        description="with loss 'huber': the error size, in (0, 10], where it turns from squared to linear "
        "(kohya's huber_c; 0.1 is its default)",
    )
    # -- output preservation (ai-toolkit's diff_output_preservation)
    preservation_weight: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="weight of the output-preservation term: on each micro-batch's noisy latents, the MSE between "
        "the LoRA model's prediction for a preservation prompt and the base model's own (LoRA off), weighted per "
        "sample as the main loss; keeps the adapter from changing what the base paints for prompts outside the "
        "style. 0 turns it off (costs two more denoiser passes per micro-batch, one without gradients)",
    )
    preservation_prompts: tuple[str, ...] = Field(
        ("",),
        min_length=1,
        description="prompts whose predictions are kept the base's (class or blank prompts, not the style's "
        "captions); the micro-batch's samples take them in turn. The default is the empty caption (what "
        "classifier-free guidance paints against)",
    )
    preservation_every: int = Field(
        1, ge=1, le=1_000_000, description="apply the output-preservation term every k-th step (its cost / k)"
    )
    # -- optimisation
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="peak learning rate")
    lr_schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="after the warm-up: linear decay to 0, cosine decay to 0, or constant"
    )
    warmup_steps: int = Field(
        0, ge=0, le=1_000_000, description="optimizer steps of linear warm-up from 0 to the peak rate"
    )
    max_steps: int = Field(500, ge=1, le=1_000_000, description="optimizer steps")
    batch_size: int = Field(4, ge=1, le=1024, description="latents per micro-batch (all of one latent size)")
    gradient_accumulation: int = Field(
        1, ge=1, le=1024, description="micro-batches per optimizer step; the effective batch is batch_size x this"
    )
    weight_decay: float = Field(1e-2, ge=0.0, description="AdamW decoupled weight decay on the LoRA weights")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping threshold (L2 norm)")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "bf16",
        description="autocast dtype on GPU, and the dtype the frozen base weights are kept in there (bf16 halves "
        "their memory: what SD 3.5 Large and Flux.1 need on 24-48 GB cards); LoRA weights and optimizer stay "
        "fp32; the CPU always trains in fp32",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute the denoiser's (UNet or transformer) activations in the backward pass: less GPU "
        "memory, about 30% slower",
    )
    channels_last: bool = Field(
        False, description="denoiser in channels-last memory layout (faster convolutions on GPU: UNet families)"
    )
    torch_compile: bool = Field(
        False,
        description="torch.compile the denoiser (GPU; the first steps of each latent size compile, then faster)",
    )
    gpus: int = Field(
        1,
        ge=0,
        le=16,
        description="GPUs of one node for this run: the pipeline's train task asks for them, and with 2 or more "
        "the run trains with DDP under `accelerate launch`, one process per GPU (effective batch x gpus); 0 asks "
        "for none (CPU)",
    )
    # -- checkpoints, validation, early stopping
    checkpoint_every: int = Field(100, ge=1, le=1_000_000, description="steps between checkpoints in the object store")
    keep_checkpoints: int = Field(
        2, ge=1, le=10_000, description="newest checkpoints kept, besides the one with the best validation loss"
    )
    eval_every: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="steps between validation losses (held-out denoising loss on the validation split, "
        "fixed timesteps and noise); also run at the last step; 0 turns validation and early stopping off",
    )
    eval_timesteps: tuple[int, ...] = Field(
        (100, 300, 500, 700, 900), min_length=1, description="fixed timesteps of the validation loss"
    )
    early_stopping_patience: int = Field(
        0,
        ge=0,
        le=100_000,
        description="validations in a row without improvement before training stops; 0 never stops early",
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0.0, description="smallest decrease of the validation loss that counts as an improvement"
    )
    log_every: int = Field(
        10,
        ge=1,
        le=1_000_000,
        description="steps between reads of the metrics from the GPU (each read waits for it); every "
        "step's metrics are logged",
    )
    system_metrics: bool = Field(
        True, description="log CPU, memory, disk, network and (with NVIDIA GPUs) GPU use to MLflow during training"
    )
    # -- the gallery painted while training (none of these changes the adapter, nor the run's key)
    sample_every: int = Field(
        250,
        ge=0,
        description="steps between gallery paintings: sample_prompts, one image each with seed sample_seed, painted "
        "by the adapter as it is (also before the first step and at the last), logged to MLflow as images per step "
        "(the UI's step slider) and shown as a strip per prompt in the evaluation report; 0 turns it off. Each "
        "painting costs about sample_steps x 2 UNet passes per prompt",
    )
    sample_prompts: tuple[str, ...] = Field(
        (*_EVALUATE["prompts"].default, *_EVALUATE["content_prompts"].default),
        description="prompts the gallery paints; in a pipeline config, when not given, the evaluate section's "
        "prompts followed by its content prompts",
    )
    sample_seed: int = Field(0, ge=0, description="seed of every gallery image (the same noise at every step)")
    sample_resolution: int = Field(
        _EVALUATE["resolution"].default,
        ge=32,
        le=2048,
        multiple_of=8,
        description="gallery image side, in pixels (pipeline: evaluate.resolution)",
    )
    sample_steps: int = Field(
        _EVALUATE["inference_steps"].default,
        ge=1,
        le=200,
        description="denoising steps per gallery image (pipeline: evaluate.inference_steps)",
    )
    sample_guidance: float = Field(
        _EVALUATE["guidance_scale"].default,
        ge=1.0,
        description="classifier-free guidance scale of the gallery (pipeline: evaluate.guidance_scale)",
    )

    @model_validator(mode="after")
    def _settings_that_need_another(self) -> TrainConfig:
        if self.early_stopping_patience and not self.eval_every:
            raise ValueError("early_stopping_patience needs validation: set eval_every > 0")
        if self.text_encoder_learning_rate is not None and not self.train_text_encoder:
            raise ValueError("text_encoder_learning_rate is set but train_text_encoder is false: set both or neither")
        self._switched_on_by_their_switch()
        self._lycoris_settings()
        if self.init_from == CHAMPION_SHORTHAND:
            raise ValueError(
                "init_from: champion means the pipeline model's champion and needs the pipeline's model_name: in a "
                "train config name it, models:/NAME@champion"
            )
        if self.sample_every and not self.sample_prompts:
            raise ValueError(
                "sample_every paints sample_prompts, and there are none: give some, or set sample_every: 0"
            )
        return self

    def _switched_on_by_their_switch(self) -> None:
        """A setting of an option that is off is refused (compared with the defaults: a saved config sets all)."""
        fields = type(self).model_fields
        for name, switch, off, on in (
            ("ema_warmup", "ema_decay", 0.0, "a decay such as 0.999"),
            ("timestep_bias_strength", "timestep_bias", "none", "high_noise or low_noise"),
            ("huber_delta", "loss", "mse", "huber"),
            ("preservation_prompts", "preservation_weight", 0.0, "a weight such as 1.0"),
            ("preservation_every", "preservation_weight", 0.0, "a weight such as 1.0"),
        ):
            if getattr(self, name) != fields[name].default and getattr(self, switch) == off:
                raise ValueError(f"{name} is set but {switch} is {off!r}: set {switch} to {on}, or leave {name} out")

    def _lycoris_settings(self) -> None:
        if self.lokr_factor == 0:
            raise ValueError("lokr_factor 0 divides nothing: give -1 (as square as possible) or a factor >= 1")
        lokr_set = self.lokr_factor != -1 or self.lokr_decompose_both
        if lokr_set and self.adapter != "lokr":
            raise ValueError(f"lokr_factor / lokr_decompose_both are LoKr settings, but adapter is {self.adapter!r}")
        if self.adapter == "lora":
            return
        for name, value, why in (
            ("use_dora", self.use_dora, "DoRA is a LoRA variant"),
            ("dropout", self.dropout, "LoRA's input dropout; peft's LoKr/LoHa have none"),
        ):
            if value:
                raise ValueError(
                    f"{name} with adapter {self.adapter!r}: {why} (use adapter 'lora', or leave {name} off)"
                )
