"""Fine-tuning: the training loop and its safetensors checkpoints."""
