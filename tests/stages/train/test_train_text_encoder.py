"""LoRA on the text encoder(s): caption states computed every step through the adapted encoders, saved with the
UNet's adapter, loaded back by diffusers, measured the same way by training's validation and by evaluate."""

from __future__ import annotations

import pytest
import torch
from adapter_files import adapter_weights

from artlora.config import TrainConfig, with_inputs
from artlora.data.latents import LatentGroup, LatentSet
from artlora.demo import tiny
from artlora.diffusion import families
from artlora.stages.evaluate import run as evaluate
from artlora.stages.train import lora
from artlora.stages.train import run as train
from artlora.stages.train.errors import TrainError
from artlora.stages.train.trainer import Trainer

CAPTIONS = ("a woodcut of a tree", "ink wash mountains", "a linocut harbour", "pastel fields")


def captioned_set(text_dim: int, pooled_dim: int | None = None, n: int = 8) -> LatentSet:
    gen = torch.Generator().manual_seed(0)
    sdxl = pooled_dim is not None
    group = LatentGroup(
        latents=torch.randn(n, 4, 8, 8, generator=gen),
        text=torch.zeros(n, 77, text_dim),  # the cached states: never read when the text encoders train
        bucket=(32, 32),
        pooled=torch.zeros(n, pooled_dim) if sdxl else None,
        time_ids=torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * n) if sdxl else None,
        captions=tuple(CAPTIONS[i % len(CAPTIONS)] for i in range(n)),
    )
    architecture = "sdxl" if sdxl else "sd1"
    return LatentSet((group,), torch.zeros(77, text_dim), "fp", torch.zeros(pooled_dim) if sdxl else None, architecture)


def text_config(**changes) -> TrainConfig:
    values = dict(storage_root="s3://tests", base_model="tiny", batch_size=4, rank=4, train_text_encoder=True)
    return TrainConfig(**{**values, **changes})


def test_text_encoder_lora_trains_through_the_caption_states():
    config = text_config(learning_rate=1e-2, text_encoder_learning_rate=5e-3)
    trainer = Trainer(config, captioned_set(32), tiny.build_tiny_sd())
    encoder = trainer.text_encoders.encoders[0]
    frozen = {n: p.detach().clone() for n, p in encoder.named_parameters() if not p.requires_grad}
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [1e-2, 5e-3]
    assert set(trainer.parts) == {"unet", "text_encoder"}

    for step in range(3):
        trainer.step(step)

    lora_b = [p for n, p in encoder.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "the text encoder's adapter was trained"
    assert all(torch.equal(p, frozen[n]) for n, p in encoder.named_parameters() if n in frozen)
    state = lora.adapter_state(trainer.parts)
    assert any(k.startswith("text_encoder.") for k in state) and any(k.startswith("unet.") for k in state)


def test_caption_dropout_swaps_in_the_empty_captions_token_ids():
    trainer = Trainer(text_config(caption_dropout=0.5), captioned_set(32), tiny.build_tiny_sd())
    empty, seen = trainer.empty_ids[0][0], []
    for index in range(6):
        batch = trainer.micro_batch(index)
        assert batch.text is None
        for ids, row in zip(batch.ids[0], batch.rows, strict=True):
            dropped = torch.equal(ids, empty)
            assert dropped or torch.equal(ids, trainer.token_ids[0][0][row])
            seen.append(dropped)
    assert any(seen) and not all(seen)


def test_a_cache_without_captions_is_refused_for_text_encoder_training():
    group = LatentGroup(latents=torch.zeros(4, 4, 8, 8), text=torch.zeros(4, 77, 32))
    with pytest.raises(TrainError, match="run augment again"):
        Trainer(text_config(), LatentSet((group,), torch.zeros(77, 32), "fp"), tiny.build_tiny_sd())


def test_sdxl_text_encoder_adapters_save_and_load_in_diffusers(tmp_path):
    config = text_config(base_model="tiny-sdxl", learning_rate=1e-2)
    trainer = Trainer(config, captioned_set(64, pooled_dim=32), tiny.build_tiny_sdxl())
    loss, _ = trainer.loss(0, with_perceptual=False)
    loss.backward()
    # Every adapter weight gets a gradient (DDP requires it): none on the first encoder's unread last layer.
    assert all(param.grad is not None for param in trainer.params)
    trainer.optimizer.zero_grad(set_to_none=True)
    for step in range(2):
        trainer.step(step)
    assert set(trainer.parts) == {"unet", "text_encoder", "text_encoder_2"}
    with trainer.evaluating():
        trained = trainer.encode_captions(list(CAPTIONS))
    lora.save_adapter(trainer.parts, tmp_path)

    pipe = tiny.build_tiny_sdxl()
    base = families.of(pipe).text_encoders(pipe).encode_captions(list(CAPTIONS))
    pipe.load_lora_weights(str(tmp_path))
    loaded = families.of(pipe).text_encoders(pipe)
    for encoder in loaded.encoders:
        encoder.eval()
    again = loaded.encode_captions(list(CAPTIONS))
    for before, after, want in zip(base, again, trained, strict=True):
        assert (after - before).abs().max() > 1e-4, "the loaded adapter changes the caption states"
        torch.testing.assert_close(after, want, atol=1e-5, rtol=1e-5)


@pytest.mark.usefixtures("mlflow_db")
def test_text_encoder_run_validates_resumes_and_evaluates_consistently(small_config, latent_cache, store):
    config = with_inputs(
        small_config.train,
        cache_uri=latent_cache,
        train_text_encoder=True,
        learning_rate=1e-2,
        max_steps=4,
        checkpoint_every=2,
        eval_every=4,
    )
    first = train.run(config)
    weights = adapter_weights(store, first.adapter_uri)
    assert any(key.startswith("text_encoder.") for key in weights)

    # Resume from the step-2 checkpoint (adapter, text encoder's included, and optimizer): the same adapter.
    store.delete_prefix(first.adapter_uri)
    second = train.run(config)
    assert second.resumed_from == 2
    again = adapter_weights(store, second.adapter_uri)
    assert again.keys() == weights.keys() and all(torch.equal(again[k], v) for k, v in weights.items())

    # Evaluate reads the captions through the adapted text encoder too, so it measures what training measured.
    evaluated = evaluate.run(
        with_inputs(small_config.evaluate, adapter_uri=second.adapter_uri, cache_uri=latent_cache, run_id=second.run_id)
    )
    assert evaluated.val_loss_lora == pytest.approx(second.best_val_loss, rel=1e-4)
    assert evaluated.val_loss_lora != pytest.approx(evaluated.val_loss_base, rel=1e-6)
