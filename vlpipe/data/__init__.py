"""Data: the synthetic world, readers of upstream formats, Parquet shards, tokenizers."""
