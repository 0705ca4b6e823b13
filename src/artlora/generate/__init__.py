"""Paint with a registered style: `artlora generate --model models:/NAME@champion --prompt ...` (one or more).

The version's lineage names its base model, whose files are checked against the digests registered with the
version (`diffusion.base_files`); its adapter is fetched once into the local cache (`registry.files`), loaded
with diffusers' `load_lora_weights` at the strength asked for, every module in eval mode (LoRA dropout off), and
each image is written as a PNG that records its prompt, seed, model version and
settings. Several prompts are painted from one load of the base model and adapter, and a contact sheet can
show them side by side with their prompts and seeds.

The package and `settings` are light (they load neither torch nor diffusers): registering a version takes the
painting parameters from `settings`. The painting itself is in `run` (`Request`, `generate`) and `painting`.
"""
