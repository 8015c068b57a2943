"""Where forecasts go: MQTT topics or standard output (JSON lines)."""
