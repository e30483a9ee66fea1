"""FLTS: a Kafka-driven forecasting pipeline."""

__version__ = "0.1.0"
