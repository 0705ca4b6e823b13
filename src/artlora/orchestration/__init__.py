"""What users do with a whole pipeline from outside it: run it here through kfp.local, or submit, schedule and
follow it on a Kubeflow Pipelines cluster. What runs inside the pipeline's tasks lives in `artlora.tasks`."""
