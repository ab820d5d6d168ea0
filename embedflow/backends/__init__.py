"""Encoders other than torch sentence-transformers, dispatched by ``encoder.load_encoder`` on a
model's ``backend``; each in its own module, imported only when a job uses it."""
