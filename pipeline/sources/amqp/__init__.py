"""RabbitMQ: a source, its acks and dead letters, its connection, its publisher."""
