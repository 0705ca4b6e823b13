"""The ingest stage: raw images in, a curated and versioned dataset out (`run.run`). Light on purpose: importing
one of its modules loads only what that module needs."""
