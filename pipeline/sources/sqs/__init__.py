"""Amazon SQS: a source, its dead letters, its client, its publisher."""
