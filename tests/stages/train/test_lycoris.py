"""LoKr and LoHa adapters (`train.adapter`): trained a few steps on the tiny SD 1.x base, the single file in the
LyCORIS layout is read back by a reader written here from the loaders' conventions (AUTOMATIC1111's and ComfyUI's:
rebuild each module's update from its factors, scale it by alpha / rank where a low-rank factor gives the rank,
add it to the base weight), and must paint what the diffusers-layout file loaded by artlora paints; that file
loads back through generate's path (the pyfunc flavour, the strength), and a run resumed from its checkpoint's
safetensors takes the steps of an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from artlora.config import ConfigError, TrainConfig, load_config
from artlora.data import tensor_files
from artlora.data.latents import LatentGroup, LatentSet
from artlora.demo import tiny
from artlora.diffusion import adapters, families, loading, painting
from artlora.diffusion.families import sgm_names
from artlora.diffusion.lycoris import LycorisError
from artlora.generate.pyfunc import StyleModel
from artlora.generate.settings import Settings
from artlora.stages.train import kohya, lora
from artlora.stages.train.trainer import Trainer

CAPTIONS = ("a red cat in ink", "two boats at dusk")
# Each kind with the shapes the tiny UNet's 32- and 64-wide layers give it: LoKr of two full factors (alpha / r
# folded in); LoKr of two low-rank factors (64 wide) and of a full and a low-rank one (the 32-wide convolutions);
# LoHa, also on the convolutions; the last two with the text encoder's adapter too.
KINDS = {
    "lokr-full": {"adapter": "lokr", "rank": 8, "alpha": 2.0},
    "lokr-decomposed": {
        "adapter": "lokr",
        "rank": 3,
        "alpha": 2.0,
        "lokr_decompose_both": True,
        "target_modules": ("attention", "convolutions"),
        "train_text_encoder": True,
    },
    "loha": {
        "adapter": "loha",
        "rank": 4,
        "alpha": 2.0,
        "target_modules": ("attention", "convolutions"),
        "train_text_encoder": True,
    },
}


def latent_set(pipe) -> LatentSet:
    """Eight random 32 px latents with two real captions' cached states."""
    states = families.of(pipe).text_encoders(pipe).states([*CAPTIONS, ""])
    group = LatentGroup(
        latents=torch.randn(8, 4, 4, 4, generator=torch.Generator().manual_seed(0)),
        text=torch.stack([states[i % 2]["hidden"] for i in range(8)]),
        captions=tuple(CAPTIONS[i % 2] for i in range(8)),
    )
    return LatentSet((group,), states[2]["hidden"], "fp", None)


def trained(base_dir, steps: int, **settings) -> Trainer:
    pipe = loading.load_pipeline(str(base_dir))
    values = {"learning_rate": 3e-2, "max_steps": 100, "batch_size": 4, "sample_every": 0, **settings}
    trainer = Trainer(
        TrainConfig(storage_root="s3://tests", base_model=str(base_dir), **values), latent_set(pipe), pipe
    )
    for step in range(steps):
        trainer.step(step)
    for part in trainer.parts.values():
        part.eval()
    return trainer


def paint(pipe, strength: float | None = None) -> np.ndarray:
    """What generate paints (its painting function), at 32 px in 2 steps."""
    pipe.set_progress_bar_config(disable=True)
    if strength is not None:
        pipe.set_adapters([adapters.ADAPTER_NAME], adapter_weights=[strength])
    return painting.paint(pipe, ["a woodcut"], [0], resolution=(32, 32), steps=2, guidance=7.5)[0].astype(float)


@torch.no_grad()
def denoised(pipe) -> torch.Tensor:
    """The UNet's prediction on fixed noisy latents at a low and a high timestep, for the captions as the
    pipeline's text encoder reads them."""
    text, _ = families.of(pipe).text_encoders(pipe).encode_captions(list(CAPTIONS))
    noisy = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    return pipe.unet(noisy, torch.tensor([100, 700]), text).sample


# -- the independent reader: the LyCORIS loaders' arithmetic -------------------------------------------------


def lycoris_deltas(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each module's weight update (flat: rows x everything else), by its kohya name."""
    names = {key.split(".", 1)[0] for key in tensors}
    deltas = {}
    for name in names:
        w = {key.split(".", 1)[1]: value.double() for key, value in tensors.items() if key.startswith(name + ".")}
        alpha = w["alpha"].item()
        if "hada_w1_a" in w:
            rank = w["hada_w1_b"].shape[0]
            product = (w["hada_w1_a"] @ w["hada_w1_b"]) * (w["hada_w2_a"] @ w["hada_w2_b"])
            deltas[name] = product * (alpha / rank)
            continue
        rank = None
        w1 = w.get("lokr_w1")
        if w1 is None:
            w1, rank = w["lokr_w1_a"] @ w["lokr_w1_b"], w["lokr_w1_b"].shape[0]
        w2 = w.get("lokr_w2")
        if w2 is None:
            w2, rank = w["lokr_w2_a"] @ w["lokr_w2_b"], w["lokr_w2_b"].shape[0]
        deltas[name] = torch.kron(w1, w2.reshape(w2.shape[0], -1)) * (1.0 if rank is None else alpha / rank)
    return deltas


def kohya_names(pipe) -> dict[str, torch.nn.Module]:
    """The UNet's and the text encoder's modules by the names the loaders give them (CLIP's under `text_model.`,
    which transformers 5.6 dropped from the module paths)."""
    names = {"lora_unet_" + path.replace(".", "_"): module for path, module in pipe.unet.named_modules()}
    for path, module in pipe.text_encoder.named_modules():
        full = path if path.startswith("text_model.") else "text_model." + path
        names["lora_te_" + full.replace(".", "_")] = module
    return names


def apply_single_file(pipe, path) -> int:
    """Add the file's updates to the base weights, finding each module by its kohya name; returns how many."""
    deltas = lycoris_deltas(load_file(path))
    modules = kohya_names(pipe)
    with torch.no_grad():
        for name, delta in deltas.items():
            weight = modules[name].weight
            weight += delta.reshape(weight.shape).to(weight.dtype)
    return len(deltas)


@pytest.fixture(scope="module", params=list(KINDS))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def adapter_folder(kind, tiny_model_dir, tmp_path_factory):
    """A trained adapter of the kind, published as the train stage publishes it (both files, provenance), and
    the image the trained model paints."""
    trainer = trained(tiny_model_dir, 3, **KINDS[kind])
    folder = tmp_path_factory.mktemp(kind)
    metadata = lora.provenance(trainer.config, 3, "fp")
    lora.save_adapter(trainer.parts, folder, metadata)
    encoders = {name: part for name, part in trainer.parts.items() if name != "unet"}  # as the train stage does
    kohya.save_kohya(trainer.denoiser, folder / "artlora-style.safetensors", "epsilon", metadata, encoders or None)
    live = loading.load_pipeline(str(tiny_model_dir))
    for name, part in trainer.parts.items():
        setattr(live, name, part)
    return folder, paint(live), denoised(live)


def test_the_single_file_paints_what_the_diffusers_layout_paints(kind, adapter_folder, tiny_model_dir):
    folder, _, trained_output = adapter_folder
    single = adapters.adapter_file(folder, "kohya")
    keys = load_file(single)
    prefix = "hada_" if KINDS[kind]["adapter"] == "loha" else "lokr_"
    prefixes = {"lora_unet_", "lora_te_"} if KINDS[kind].get("train_text_encoder") else {"lora_unet_"}
    assert {key.split("_", 2)[1] for key in keys} == {prefix.split("_")[1] for prefix in prefixes}
    assert {key.rsplit(".", 1)[1] for key in keys} - {"alpha"} <= {
        *(f"{prefix}{w}" for w in ("w1", "w2", "w1_a", "w1_b", "w2_a", "w2_b"))
    }
    if kind == "lokr-decomposed":
        assert any(key.endswith(".lokr_w1_a") for key in keys) and any(key.endswith(".lokr_w1") for key in keys)
        assert not any(key.endswith(".lokr_w2") for key in keys)
    if kind == "lokr-full":
        assert not any(key.endswith(("_a", "_b")) for key in keys)

    by_reader = loading.load_pipeline(str(tiny_model_dir))
    base_output = denoised(by_reader)
    modules = apply_single_file(by_reader, single)
    by_artlora = loading.load_pipeline(str(tiny_model_dir))
    adapters.load_adapter(by_artlora, adapters.adapter_file(folder))

    assert modules == len({key.split(".", 1)[0] for key in keys}) > 0
    assert (trained_output - base_output).abs().max() > 1e-3, "the adapter changes the prediction"
    torch.testing.assert_close(denoised(by_artlora), trained_output, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(denoised(by_reader), trained_output, atol=1e-5, rtol=1e-4)


def test_the_published_adapter_paints_through_generates_path(kind, adapter_folder, tiny_model_dir):
    """The pyfunc flavour (what a registered version loads as): base model from the adapter's provenance,
    the diffusers-layout file, the strength as the adapter's weight."""
    folder, trained_image, _ = adapter_folder
    painter = StyleModel(folder).painter
    image = painter.paint("a woodcut", 0, Settings(steps=2), size=(32, 32))
    np.testing.assert_allclose(np.asarray(image, dtype=float), trained_image, atol=1)
    base = paint(loading.load_pipeline(str(tiny_model_dir)))
    off = painter.paint("a woodcut", 0, Settings(steps=2, strength=0.0), size=(32, 32))
    np.testing.assert_allclose(np.asarray(off, dtype=float), base, atol=1)
    assert np.abs(trained_image - base).max() > 1
    assert len(adapters.adapter_digest(folder)) == 32


def test_artlora_refuses_the_ui_file_with_the_one_it_loads(adapter_folder, tiny_model_dir):
    folder = adapter_folder[0]
    with pytest.raises(LycorisError, match="--layout diffusers"):
        adapters.load_adapter(loading.load_pipeline(str(tiny_model_dir)), adapters.adapter_file(folder, "kohya"))


def test_metadata_names_the_lycoris_network(kind, adapter_folder):
    folder = adapter_folder[0]
    entries = adapters.read_metadata(adapters.adapter_file(folder, "kohya"), prefix="")
    assert entries["ss_network_module"] == "lycoris.kohya"
    assert f'"algo": "{KINDS[kind]["adapter"]}"' in entries["ss_network_args"]
    assert entries["ss_network_dim"] == str(KINDS[kind]["rank"])
    assert TrainConfig.model_validate_json(entries["artlora.config"]).adapter == KINDS[kind]["adapter"]


@pytest.mark.parametrize("adapter", ["lokr", "loha"])
def test_a_run_resumed_from_its_checkpoint_files_takes_the_uninterrupted_steps(adapter, tiny_model_dir):
    settings = {"adapter": adapter, "rank": 2, "alpha": 2.0}
    straight = trained(tiny_model_dir, 3, **settings)
    first = trained(tiny_model_dir, 1, **settings)
    # What a checkpoint holds, through its files: the adapter as safetensors, the trainer state as tensors + JSON.
    adapter_bytes = tensor_files.save_bytes(lora.adapter_state(first.parts))
    state_files = tensor_files.state_files(first.state_dict())
    resumed = trained(tiny_model_dir, 0, **settings)
    resumed.denoiser.train()
    lora.load_adapter_state(resumed.parts, tensor_files.load_bytes(adapter_bytes, "adapter"))
    resumed.load_state_dict(tensor_files.read_state(*state_files, "state"))
    for step in (1, 2):
        resumed.step(step)
    expected, got = lora.adapter_state(straight.parts), lora.adapter_state(resumed.parts)
    assert expected.keys() == got.keys() and any(".lokr_" in key or ".hada_" in key for key in expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


# -- the settings ----------------------------------------------------------------------------------------


def test_the_settings_are_checked_and_searchable():
    train = {"storage_root": "s3://tests", "base_model": "x"}
    for wrong, message in (
        ({"adapter": "loha", "use_dora": True}, "use_dora with adapter 'loha'"),
        ({"adapter": "lokr", "dropout": 0.1}, "dropout with adapter 'lokr'"),
        ({"lokr_factor": 4}, "LoKr settings, but adapter is 'lora'"),
        ({"adapter": "lokr", "lokr_factor": 0}, "lokr_factor 0"),
        ({"adapter": "dora"}, "'lora', 'lokr' or 'loha'"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**train, **wrong)
    # At their defaults the settings stay out of the resolved config (run keys and compiled pipelines unchanged).
    assert not {"adapter", "lokr_factor", "lokr_decompose_both"} & set(TrainConfig(**train).model_dump())
    chosen = TrainConfig(**train, adapter="lokr", lokr_factor=4).model_dump(mode="json")
    assert TrainConfig.model_validate(chosen).lokr_factor == 4

    config = load_config("configs/demo.yaml", ["search.adapter=[lora, loha]"])  # with text-encoder training
    assert config.search.space() == {"adapter": ("lora", "loha")}
    with pytest.raises(ConfigError, match="adapter: 'lokr' is not a valid train.adapter"):
        load_config("configs/sd15.yaml", ["search.adapter=[lora, lokr]"])  # sd15.yaml trains with dropout 0.1


def test_sdxl_single_file_holds_the_adapters_updates_under_the_original_names(tmp_path):
    """SDXL's file: the LyCORIS keys on the SGM UNet names and the two text encoders' `lora_te1_`/`lora_te2_`
    names; the reader's updates added to the base give the adapted UNet's prediction (random factors: LoKr's
    second one starts at zero)."""
    pipe = tiny.build_tiny_sdxl()
    config = TrainConfig(storage_root="s3://tests", base_model="x", adapter="lokr", rank=3, lokr_decompose_both=True)
    torch.manual_seed(0)
    lora.add_lora(pipe.unet, config)
    lora.add_text_encoder_lora(pipe.text_encoder_2, config, families.of(pipe).text_encoder_targets)
    with torch.no_grad():
        for name, param in [*pipe.unet.named_parameters(), *pipe.text_encoder_2.named_parameters()]:
            if ".lokr_" in name:
                param.normal_(0, 0.3)
    pipe.unet.eval()
    path = kohya.save_kohya(
        pipe.unet, tmp_path / "x.safetensors", "epsilon", None, {"text_encoder_2": pipe.text_encoder_2}
    )
    tensors = load_file(path)
    assert {key.split("_", 2)[1] for key in tensors} == {"unet", "te2"}
    assert any(key.startswith("lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q.") for key in tensors)

    base = tiny.build_tiny_sdxl()
    names = {
        "lora_unet_" + sgm_names.sgm_path(p, base.unet.config).replace(".", "_"): m
        for p, m in base.unet.named_modules()
        if p.endswith(("to_q", "to_k", "to_v", "to_out.0"))
    }
    for p, m in base.text_encoder_2.named_modules():
        names["lora_te2_" + ("" if p.startswith("text_model.") else "text_model_") + p.replace(".", "_")] = m
    ids = base.tokenizer_2(["a red cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    width = base.unet.config.projection_class_embeddings_input_dim - 6 * base.unet.config.addition_time_embed_dim
    gen = torch.Generator().manual_seed(1)
    noisy = torch.randn(1, 4, 4, 4, generator=gen)
    text = torch.randn(1, 8, base.unet.config.cross_attention_dim, generator=gen)
    added = {"text_embeds": torch.randn(1, width, generator=gen), "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]])}

    @torch.no_grad()
    def outputs(sdxl) -> tuple[torch.Tensor, torch.Tensor]:
        """The second text encoder's penultimate states and the UNet's prediction."""
        states = sdxl.text_encoder_2(ids, output_hidden_states=True).hidden_states[-2]
        return states, sdxl.unet(noisy, torch.tensor([500]), text, added_cond_kwargs=added).sample

    before, adapted = outputs(base), outputs(pipe)
    deltas = lycoris_deltas(tensors)
    with torch.no_grad():
        for name, delta in deltas.items():
            names[name].weight += delta.reshape(names[name].weight.shape).float()
    assert len(deltas) == len({key.split(".", 1)[0] for key in tensors})
    for changed, expected, of_base in zip(outputs(base), adapted, before, strict=True):
        assert (expected - of_base).abs().max() > 1e-3, "the adapter changes it"
        torch.testing.assert_close(changed, expected, atol=1e-5, rtol=1e-4)
