"""Redis Streams: a source, its dead letters, its connection."""
