"""Dataset readers, one module per release, plus the shard store they write through."""
