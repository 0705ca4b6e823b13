"""SDXL's single-file LoRA names: kohya trains SDXL on the original (SGM, "ldm") UNet, so its LoRA names are that
UNet's paths: `input_blocks.N.0` is a ResNet (conv1 -> in_layers.2, conv2 -> out_layers.3, conv_shortcut ->
skip_connection, time_emb_proj -> emb_layers.1), `input_blocks.N.1` its transformer, `input_blocks.N.0.op` a
downsampler, `middle_block.0/1/2` the mid ResNet/transformer/ResNet, `output_blocks.N.K.conv` an upsampler. The
numbering follows from the UNet's config (layers_per_block, which up blocks have attention), so the tiny SDXL
maps as the real one does.

Refused, because diffusers' SGM reader (`_maybe_map_sgm_blocks_to_diffusers`) would misnumber them: per-block
`layers_per_block` (it takes one number), an upsampler in an up block without attention (kohya's
`output_blocks.N.1.conv`, which diffusers files under `attentions`; real and tiny SDXL upsample only in attention
blocks), and both block N and block N0-N9 carrying LoRA keys (it gathers `input_blocks_1` by substring, so it
also takes block 10's keys; SDXL has 9 per side).
"""

from __future__ import annotations

from collections.abc import Iterable

from artlora.diffusion.lora_keys import UnsupportedAdapterError

_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP_LEVEL = (
    ("conv_in", "input_blocks.0.0"),
    ("time_embedding.linear_1", "time_embed.0"),
    ("time_embedding.linear_2", "time_embed.2"),
    ("add_embedding.linear_1", "label_emb.0.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
    ("conv_norm_out", "out.0"),
    ("conv_out", "out.2"),
)


def _layers_per_block(config) -> int:
    layers = config.layers_per_block
    if not isinstance(layers, int):
        raise UnsupportedAdapterError(
            f"layers_per_block {layers} differs per block; the original UNet numbering that kohya and diffusers' "
            "reader use assumes one number"
        )
    return layers


def _entry(kind: str, rest: list[str], path: str) -> tuple[int, str]:
    """A block entry's slot and the path below it: (0, ResNet part) or (1, transformer path)."""
    if kind == "attentions" and rest:
        return 1, ".".join(rest)
    if kind == "resnets" and rest and rest[0] in _RESNET_PARTS:
        return 0, ".".join([_RESNET_PARTS[rest[0]], *rest[1:]])
    raise UnsupportedAdapterError(f"no original-UNet name for {path!r}")


def sgm_path(path: str, config) -> str:
    """A diffusers UNet module or parameter path -> the original (SGM/ldm) UNet's path, numbered from the config:
    `down_blocks.1.attentions.0.proj_in` -> `input_blocks.4.1.proj_in` for SDXL (2 layers per block)."""
    for diffusers_path, original in _TOP_LEVEL:
        if path == diffusers_path or path.startswith(diffusers_path + "."):
            return original + path[len(diffusers_path) :]
    parts = path.split(".")
    if parts[0] == "mid_block" and len(parts) > 3:
        kind, index = parts[1], int(parts[2])
        slot, below = _entry(kind, parts[3:], path)
        return f"middle_block.{2 * index + slot}.{below}"  # resnet, transformer, resnet
    if parts[0] not in ("down_blocks", "up_blocks") or len(parts) < 5:
        raise UnsupportedAdapterError(f"no original-UNet name for {path!r}")
    per_block = _layers_per_block(config)
    stride = per_block + 1  # each level's entries: its layers, then one holding its down/upsampler
    block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
    if parts[0] == "down_blocks":
        if kind == "downsamplers" and rest[0] == "conv":
            return ".".join([f"input_blocks.{1 + block * stride + per_block}.0.op", *rest[1:]])
        slot, below = _entry(kind, rest, path)
        return f"input_blocks.{1 + block * stride + index}.{slot}.{below}"
    if kind == "upsamplers" and rest[0] == "conv":
        slot = 2 if "CrossAttn" in config.up_block_types[block] else 1  # after the resnet (and transformer)
        return ".".join([f"output_blocks.{block * stride + per_block}.{slot}.conv", *rest[1:]])
    slot, below = _entry(kind, rest, path)
    return f"output_blocks.{block * stride + index}.{slot}.{below}"


def check_diffusers_reads(paths: Iterable[str]) -> None:
    """Refuse SGM names that diffusers' reader would misfile (see the module docstring)."""
    paths = list(paths)
    for path in paths:
        parts = path.split(".")
        if parts[0] == "output_blocks" and parts[2:4] == ["1", "conv"]:
            raise UnsupportedAdapterError(
                f"{path}: an upsampler in an up block without attention, which diffusers' SGM reader takes for "
                "a transformer; leave out upsamplers.0.conv or use the diffusers-layout file"
            )
    for side in ("input_blocks", "output_blocks"):
        used = {path.split(".")[1] for path in paths if path.startswith(side + ".")}
        clashes = sorted(f"{a}/{b}" for a in used for b in used if a != b and b.startswith(a))
        if clashes:
            raise UnsupportedAdapterError(
                f"{side} {clashes[0]} both carry LoRA keys: diffusers' SGM reader gathers a block's keys by "
                "prefix and mixes them up; use the diffusers-layout file"
            )
