"""NATS JetStream: a source, its dead letters, its connection, its publisher."""
