"""Code that runs inside the pipeline's tasks besides the stages: the change check, the typed parameters, the grid
search's plan and pick, and the launch of a multi-GPU training. Below `components/` and `pipelines/`, which call
it; it imports neither of them, nor `orchestration/`, which drives whole pipelines from outside."""
