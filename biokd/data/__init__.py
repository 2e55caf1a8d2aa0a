"""The data core: the spec of an item, the shard store, the reader and its transforms."""
