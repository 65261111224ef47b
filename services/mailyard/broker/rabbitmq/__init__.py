"""The RabbitMQ adapter of the broker port: the only code that knows AMQP."""

from mailyard.broker.rabbitmq.adapter import RabbitBroker

__all__ = ["RabbitBroker"]
