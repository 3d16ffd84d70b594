"""SmartLogs: real-time log management with online template mining and anomaly detection."""

__version__ = "0.1.0"
