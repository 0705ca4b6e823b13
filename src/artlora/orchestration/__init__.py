"""What users do with the whole pipeline rather than one stage: run it here, (later) on a cluster."""
