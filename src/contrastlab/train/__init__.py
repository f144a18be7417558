"""Training stages: contrastive / supervised pretraining and probe fine-tuning."""
