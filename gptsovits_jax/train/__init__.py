"""Train states, jitted GPT and SoVITS steps, data parallelism, checkpoints and the loop."""
