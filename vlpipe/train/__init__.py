"""Training: the one loop shared by pretrain and every finetune, distributed helpers, checkpoints."""
