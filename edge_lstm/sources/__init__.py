"""Where samples come from: an MQTT subscription, a serial line, or a CSV replay.

Each source runs in its own thread (paho's network thread for MQTT) and hands raw samples to
an `edge_lstm.intake.Intake`; `start()` begins, `stop()` ends and returns once no more
samples will be offered.
"""
