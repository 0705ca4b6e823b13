"""What the demo and the tests are made of, apart from the pipeline itself: procedural sample artworks in five
styles (`sample_data`), tiny Stable Diffusion models built in code (`tiny`), and the pretrained tiny base the demo
trains on (`pretrained`, learned from `toy_scenes`). No stage imports this package."""
