"""The EMCL retrieval model: configs, the open_clip backbone, the loss, checkpoints, the encoder."""
