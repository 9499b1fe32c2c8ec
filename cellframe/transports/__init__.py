"""Transports: how envelopes move between nodes (in-process, or AMQP on RabbitMQ)."""
