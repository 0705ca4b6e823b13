"""The formats stages hand each other: the dataset manifest, the latent cache and its shards, decoded images,
content digests, and the procedural sample art. No stage is imported from here."""
